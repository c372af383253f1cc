"""ngram: one estimator at one order -> models/ngram/<estimator>-<order>/ (model.npz, model.arpa, scores.json)."""

import argparse
import resource
import time
import warnings

import pandas as pd

from seqlab import stage
from seqlab.errors import SeqLabError, exit_on_error
from seqlab.evaluate import load_eval_set, score
from seqlab.io import atomic_path, write_json
from seqlab.ngram import BACKOFF_FORM, count, estimate, prune
from seqlab.ngram.arpa import write_arpa
from seqlab.ngram.model_file import save_model
from seqlab.registry import registered_name, version_tags
from seqlab.vocab import BOS, load_vocab

TOKENS, VOCAB = "data/tokens", "data/vocab"


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("estimator")
    parser.add_argument("order", type=int)
    args = parser.parse_args()
    params = stage.params()
    cfg = params.ngram
    if not 1 <= args.order <= cfg.max_order:
        raise SeqLabError(f"order {args.order} is outside 1..{cfg.max_order} (params.yaml: ngram.orders, ngram.max_order)")
    name = f"{args.estimator}-{args.order}"
    out = f"models/ngram/{name}"
    with stage.tracked(f"ngram {name}", params, "ngram", outs=(out,)) as run:
        vocab = load_vocab(VOCAB)
        train, valid, test = (load_eval_set(TOKENS, split, vocab) for split in ("train", "valid", "test"))
        started = time.perf_counter()
        tables = prune(count(train.segments, args.order, len(vocab)), cfg.cutoffs, len(vocab))
        model = estimate(args.estimator, tables, len(vocab), vocab.index[BOS], valid=valid.segments, k=cfg.addk_k)
        build_seconds = time.perf_counter() - started
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scores = {split: score(model, data, name) for split, data in (("valid", valid), ("test", test))}
        for warning in caught:
            print(f"warning: {warning.message}")
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with atomic_path(out) as tmp:
            tmp.mkdir()
            save_model(model, tmp / "model.npz", vocab.sha256)
            if args.estimator in BACKOFF_FORM:
                write_arpa(model, list(vocab.tokens), tmp / "model.arpa")
            summary = {
                "model": f"ngram-{name}",
                "family": "ngram",
                "estimator": args.estimator,
                "order": args.order,
                "registered_model": registered_name("ngram"),
                "params": model.params,
                "cutoffs": cfg.cutoffs,
                "ngrams": [len(t) for t in model.tables],
                "vocab_sha256": vocab.sha256,
                **{split: s.as_dict() for split, s in scores.items()},
            }
            write_json(tmp / "scores.json", summary)
        run.log_params({"model": f"ngram-{name}", "family": "ngram", "estimator": args.estimator, "order": args.order,
                        **{f"tuned.{k}": v for k, v in model.params.items()}})
        run.log_metrics({"build_seconds": build_seconds, "peak_memory_mb": peak_mb,
                         **scores["valid"].metrics("valid"), **scores["test"].metrics("test")})
        run.log_artifact(f"{out}/scores.json")
        if args.estimator in BACKOFF_FORM:
            run.log_artifact(f"{out}/model.arpa", compress=True)
        run.set_tag("seqlab.vocab_sha256", vocab.sha256)
        version = run.log_pyfunc_model(
            {"model": f"{out}/model.npz", "vocab": VOCAB, "tokenizer": f"{TOKENS}/tokenizer.json"},
            registered_name("ngram"),
            pd.DataFrame({"context": ["<s> to be or not to"]}),
            {"top_k": 10},
            {"estimator": args.estimator, "order": str(args.order), **version_tags(summary, out, TOKENS)},
        )
        run.tag_data_hashes("deps", [TOKENS, VOCAB])
        run.tag_data_hashes("outs", [out])
        print(f"ngram {name}: valid ppl {scores['valid'].ppl:.2f}, test ppl {scores['test'].ppl:.2f}, "
              f"built in {build_seconds:.2f} s; registered as {registered_name('ngram')} version {version}")


if __name__ == "__main__":
    main()
