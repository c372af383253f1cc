"""ngram: one estimator at one order -> models/ngram/<estimator>-<order>/ (model.npz, model.arpa, scores.json)."""

import argparse
import resource
import time
import warnings

from seqlab import paths, stage
from seqlab.errors import SeqLabError, exit_on_error
from seqlab.io import atomic_path, write_json
from seqlab.ngram import BACKOFF_FORM, count, estimate, prune
from seqlab.ngram.arpa import write_arpa
from seqlab.ngram.model_file import save_model
from seqlab.registry import registered_name
from seqlab.scoring import Summary, load_eval_set, score
from seqlab.vocab import BOS, load_vocab


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
    out = paths.ngram_folder(args.estimator, args.order)
    with stage.tracked(f"ngram {name}", params, "ngram", outs=(out,)) as run:
        vocab = load_vocab(paths.VOCAB)
        train, valid, test = (load_eval_set(paths.TOKENS, split, vocab) for split in ("train", "valid", "test"))
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
        summary = Summary(f"ngram-{name}", "ngram", args.estimator, args.order, registered_name("ngram"),
                          {"params": model.params, "cutoffs": cfg.cutoffs, "ngrams": [len(t) for t in model.tables]},
                          vocab.sha256, scores["valid"], scores["test"])
        with atomic_path(out) as tmp:
            tmp.mkdir()
            save_model(model, tmp / "model.npz", vocab.sha256)
            if args.estimator in BACKOFF_FORM:
                write_arpa(model, list(vocab.tokens), tmp / "model.arpa")
            write_json(tmp / "scores.json", summary.as_dict())
        if args.estimator in BACKOFF_FORM:
            run.log_artifact(f"{out}/model.arpa", compress=True)
        version = stage.publish(
            run, summary, out, {"model": f"{out}/model.npz"}, stage.example_context(valid, vocab),
            params={"estimator": args.estimator, "order": args.order, **{f"tuned.{k}": v for k, v in model.params.items()}},
            metrics={"build_seconds": build_seconds, "peak_memory_mb": peak_mb},
            artifacts=[f"{out}/scores.json"], tags={"estimator": args.estimator, "order": str(args.order)})
        print(f"ngram {name}: valid ppl {scores['valid'].ppl:.2f}, test ppl {scores['test'].ppl:.2f}, "
              f"built in {build_seconds:.2f} s; registered as {summary.registered_model} version {version}")


if __name__ == "__main__":
    main()
