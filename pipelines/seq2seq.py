"""seq2seq: the encoder-decoder of params.yaml (seq2seq, seq2seq_train, with the search's best
configuration from models/seq2seq_tune/best_config.json put in) and each entry of seq2seq_baselines
(the same with the entry's changes), trained on data/seq2seq -> for each model NAME (attention, or
the baseline's name): models/seq2seq/NAME/ (model.pt, source_vocab/, target_vocab/, scores.json,
test_hypotheses.tsv), metrics/seq2seq/models/NAME.json, metrics/seq2seq/history/NAME.csv,
plots/seq2seq/curves/NAME.png.

The models train side by side (seq2seq_train.side_by_side), each in a process of its own with an
equal share of the cores: on 2 cores two models at one thread each get about 1.5 times the tokens
per second of one model on both. `seq2seq.py --only NAME` trains that one alone.

The valid and test pairs are scored teacher-forced (cross-entropy per target token, </s> included);
then every distinct test source is decoded once (beam search, seq2seq_train.beam) and scored against
all its references: token (phoneme) and sequence (word) error rates, by the closest reference.
An interrupted run resumes each model from checkpoints/seq2seq/NAME on the next `dvc repro`.
"""

import argparse
import os
import shutil
import time
from dataclasses import astuple
from pathlib import Path

import pandas as pd
import torch

from seqlab import paths, stage
from seqlab.config import Params, seq2seq_with
from seqlab.determinism import fix_threads
from seqlab.errors import exit_on_error
from seqlab.io import atomic_path, dvc_md5, remove, write_json
from seqlab.models.checkpoint import SEQ2SEQ_FORMAT, load_checkpoint
from seqlab.models import Seq2SeqConfig, build_seq2seq, count_parameters
from seqlab.pairs import read_pairs
from seqlab.processes import plan, report, side_by_side
from seqlab.registry import registered_name, seq2seq_version_tags
from seqlab.tracking import pipeline_key
from seqlab.training import fingerprint, fit
from seqlab.training.curve import plot_learning_curve
from seqlab.training.seq2seq import Seq2SeqTask
from seqlab.tune.best import tuned
from seqlab.transduce import encode_pairs, evaluate, vocabularies_sha256
from seqlab.vocab import PAIR_SPECIALS, load_vocab

OUTPUT_FOLDERS = (paths.SEQ2SEQ, paths.SEQ2SEQ_METRICS, paths.SEQ2SEQ_HISTORY, paths.SEQ2SEQ_CURVES)


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", metavar="NAME", help="train this model alone: attention, or an entry of params.yaml's seq2seq_baselines")
    args = parser.parse_args()
    params, changes = tuned(stage.params(), paths.SEQ2SEQ_TUNE_BEST, "seq2seq")
    names = [args.only] if args.only else ["attention", *params.seq2seq_baselines]
    if args.only not in (None, "attention"):
        seq2seq_with(params, args.only)  # a name params.yaml does not have is refused before any training
    processes, threads = plan(len(names), params.seq2seq_train.side_by_side, fix_threads())
    os.environ["SEQLAB_PIPELINE_KEY"] = pipeline_key()  # every model's run under this pipeline's one parent run
    with stage.kept(OUTPUT_FOLDERS):
        if processes > 1:
            print(f"seq2seq: {', '.join(names)} side by side, {processes} at a time, {threads} thread{'s' * (threads > 1)} each")
        side_by_side(train_model, [(name, params, changes, threads, processes == 1) for name in names], processes, "seq2seq")
        if not args.only:  # the folders hold the configured models only: none of a baseline taken out of params.yaml
            keep = {Path(out).name for name in names for out in astuple(paths.seq2seq_outputs(name))}
            for folder in OUTPUT_FOLDERS:
                for found in Path(folder).glob("*"):
                    if found.name not in keep:
                        remove(found)


def train_model(name: str, params: Params, changes: dict, threads: int, bars: bool) -> None:
    """Train, score, decode and register the model ``name`` of ``params`` (the search's ``changes`` put
    in, read once by the stage) on ``threads`` intra-op threads; progress bars for its rounds and
    decoding when ``bars`` (else its rounds move the bar of ``side_by_side``)."""
    threads = fix_threads(threads)
    baseline = None if name == "attention" else name
    arch, cfg = seq2seq_with(params, baseline), params.seq2seq_train
    out = paths.seq2seq_outputs(name)
    folder, checkpoints = out.folder, out.checkpoints
    metrics_file, history_file, curve = out.metrics, out.history, out.curve
    source_vocab, target_vocab = (load_vocab(f"{paths.PAIRS}/{side}_vocab", PAIR_SPECIALS) for side in ("source", "target"))
    vocab_sha256 = vocabularies_sha256(source_vocab, target_vocab)
    with stage.tracked(f"seq2seq {name}", params, "seq2seq", "seq2seq_train", outs=(folder, metrics_file, history_file, curve)) as run:
        train, valid, test = (read_pairs(f"{paths.PAIRS}/{split}.tsv") for split in ("train", "valid", "test"))
        config = Seq2SeqConfig(len(source_vocab), len(target_vocab), **arch.model_dump())
        torch.manual_seed(cfg.seed)
        model = build_seq2seq(config)
        parameters = count_parameters(model)
        run.log_params({"model": f"seq2seq-{name}", "parameters": parameters, "torch_threads": threads,
                        **({"baseline": baseline} if baseline else {})})
        described = ", ".join(f"{k}={v}" for k, v in changes.items())
        if changes:
            run.set_tag("seqlab.tuned", described)
        described_arch = "transformer" if arch.kind == "transformer" else f"{arch.rnn}, attention {arch.attention}"
        print(f"seq2seq {name}: {parameters:,} parameters, {len(train):,} train pairs ({described_arch})"
              + (f"; tuned: {described}" if changes else ""))
        task = Seq2SeqTask(encode_pairs(train, source_vocab, target_vocab), encode_pairs(valid, source_vocab, target_vocab),
                           vocab_sha256, cfg.label_smoothing, cfg.teacher_forcing)
        log_round = lambda r: run.log_metrics(  # noqa: E731
            {"train_loss": r.train_loss, "valid_loss": r.valid_loss, "round_valid_ppl": r.valid_ppl, "lr": r.lr,
             "tokens_per_s": r.tokens_per_s, "tokens_seen": r.tokens}, step=r.round)
        report(name, 0, cfg.tokens)
        started = time.perf_counter()
        result = fit(model, task, cfg, checkpoints,
                     fingerprint(config.as_dict(), cfg.model_dump(), vocab_sha256, dvc_md5(paths.PAIRS)),
                     lambda r: (log_round(r), report(name, r.tokens, cfg.tokens)), label=name, bars=bars)
        seconds = time.perf_counter() - started
        best = load_checkpoint(f"{checkpoints}/best.pt", vocab_sha256, format=SEQ2SEQ_FORMAT)
        stressed = params.pairs.source == "cmudict" and params.pairs.stress == "keep"
        max_length = params.pairs.max_length
        started = time.perf_counter()
        scores = {split: evaluate(best, pairs, source_vocab, target_vocab, max_length, cfg.beam, cfg.length_penalty,
                                  cfg.eval_batch_size, stressed, progress=bars)
                  for split, pairs in (("valid", valid), ("test", test))}
        decode_seconds = time.perf_counter() - started
        reading = {"source_chars": params.pairs.source == "cmudict" or params.pairs.source_chars,
                   "lowercase": params.pairs.source == "cmudict", "max_length": max_length}
        summary = {"model": f"seq2seq-{name}", "task": "seq2seq", "reading": reading, "config": config.as_dict(), "train": cfg.model_dump(),
                   "tuned": changes, "parameters": parameters, "best_round": result.best_round, "rounds_run": len(result.history),
                   "tokens_seen": result.history[-1].tokens, "stopped_early": result.stopped_early, "vocab_sha256": vocab_sha256,
                   "valid": scores["valid"].as_dict(), "test": scores["test"].as_dict(),
                   "history": [{k: getattr(r, k) for k in ("round", "tokens", "train_loss", "valid_loss", "valid_ppl", "lr")}
                               for r in result.history]}
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            shutil.copyfile(f"{checkpoints}/best.pt", tmp / "model.pt")
            for side in ("source", "target"):  # the folder is the whole model: weights, vocabularies, how to read a source
                shutil.copytree(f"{paths.PAIRS}/{side}_vocab", tmp / f"{side}_vocab")
            write_json(tmp / "scores.json", summary)
            pd.DataFrame([{"source": " ".join(s), "hypothesis": " ".join(h), "score": score}
                          for s, h, score in scores["test"].hypotheses]).to_csv(tmp / "test_hypotheses.tsv", sep="\t", index=False)
        with atomic_path(history_file) as tmp:
            pd.DataFrame([vars(r) for r in result.history]).to_csv(tmp, index=False, float_format="%.6g")
        plot_learning_curve(result.history, curve, f"seq2seq-{name}")
        result_test = scores["test"].as_dict()
        metrics = {"model": f"seq2seq-{name}", "parameters": parameters, "best_round": result.best_round,
                   "valid_target_ppl": scores["valid"].ppl, "valid_wer": scores["valid"].rates.sequence_error_rate, **{f"test_{k}": v for k, v in result_test.items()},
                   "train_minutes": seconds / 60, "evaluate_sources_per_s": (scores["valid"].rates.sources + scores["test"].rates.sources) / decode_seconds}
        write_json(metrics_file, metrics)
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        for artifact in (f"{folder}/scores.json", f"{folder}/test_hypotheses.tsv", history_file, curve):
            run.log_artifact(artifact)
        registered = registered_name("seq2seq_transformer" if arch.kind == "transformer" else f"seq2seq_{arch.attention}")
        version = run.log_pyfunc_model(
            {"model": f"{folder}/model.pt", "scores": f"{folder}/scores.json", "source_vocab": f"{folder}/source_vocab",
             "target_vocab": f"{folder}/target_vocab"}, registered, pd.DataFrame({"source": [("" if reading["source_chars"] else " ").join(test[0].source)]}),
            {"beam": cfg.beam, "nbest": 1}, seq2seq_version_tags(summary, folder, paths.PAIRS), code="pyfunc_transducer.py")
        run.tag_data_hashes("deps", [paths.PAIRS])
        run.tag_data_hashes("outs", [folder, metrics_file, history_file, curve])
    shutil.rmtree(checkpoints, ignore_errors=True)
    r = result_test
    without = f", without stress PER {r['per_without_stress']:.2%} WER {r['wer_without_stress']:.2%}" if stressed else ""
    print(f"seq2seq {name}: test PER {r['per']:.2%}, WER {r['wer']:.2%}{without}, target ppl {r['target_ppl']:.3f} "
          f"(best round {result.best_round} of {len(result.history)}), {seconds / 60:.1f} min; registered as {registered} version {version}")


if __name__ == "__main__":
    main()
