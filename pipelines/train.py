"""train: the neural LM of params.yaml (model, train), with the tune stage's best configuration put in
(models/tune/best_config.json) -> models/neural/ (model.pt, scores.json), metrics/train.json,
metrics/train_history.csv, plots/learning_curve.png.

`train.py --baseline NAME` trains that entry of params.yaml's baselines instead (the same configuration
with its changes) -> models/baselines/NAME/, metrics/baselines/NAME.json, NAME_history.csv, NAME.png.

An interrupted run (Ctrl-C, kill -9) resumes from its checkpoints/ folder on the next `dvc repro`.
"""

import argparse
import resource
import shutil
import time

import numpy as np
import pandas as pd
import torch

from seqlab import stage
from seqlab.config import dotted, with_changes
from seqlab.errors import SeqLabError, exit_on_error
from seqlab.evaluate import load_eval_set, score
from seqlab.io import atomic_path, dvc_md5, write_json
from seqlab.models import build, config_from_params, count_parameters
from seqlab.models.checkpoint import load_checkpoint
from seqlab.models.scoring import NeuralLM, NextToken
from seqlab.registry import neural_family, registered_name, version_tags
from seqlab.train import TrainConfig, fingerprint, plot_learning_curve, train
from seqlab.tune import tuned
from seqlab.vocab import load_vocab

TOKENS, VOCAB = "data/tokens", "data/vocab"
BEST_CONFIG = "models/tune/best_config.json"


def paths(baseline: str | None) -> tuple[str, ...]:
    """(model folder, resume checkpoints, metrics, history, learning curve) of the tuned model or a baseline."""
    if baseline is None:
        return "models/neural", "checkpoints/train", "metrics/train.json", "metrics/train_history.csv", "plots/learning_curve.png"
    return (f"models/baselines/{baseline}", f"checkpoints/baselines/{baseline}", f"metrics/baselines/{baseline}.json",
            f"metrics/baselines/{baseline}_history.csv", f"plots/baselines/{baseline}.png")


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", help="an entry of params.yaml's baselines")
    args = parser.parse_args()
    params, changes = tuned(stage.params(), BEST_CONFIG)
    if args.baseline is not None:
        if args.baseline not in params.baselines:
            raise SeqLabError(f"params.yaml: baselines.{args.baseline}: no such baseline (have: {', '.join(params.baselines) or 'none'})")
        changes = {**changes, **dotted(params.baselines[args.baseline], f"baselines.{args.baseline}")}
        params = with_changes(params, changes, f"params.yaml: baselines.{args.baseline}")
    OUT, WORK, METRICS, HISTORY, CURVE = paths(args.baseline)
    vocab = load_vocab(VOCAB)
    config = config_from_params(params.model.model_dump(), len(vocab))
    cfg = TrainConfig(**params.train.model_dump())
    family = neural_family(config.kind, config.rnn, config.attention)
    name = args.baseline or (family if family in ("transformer", config.rnn) else f"{config.rnn}-{config.attention}")  # lstm-dot, ...
    with stage.tracked(f"train {name}", params, "model", "train", outs=(OUT, METRICS, HISTORY, CURVE)) as run:
        train_set, valid, test = (load_eval_set(TOKENS, split, vocab) for split in ("train", "valid", "test"))
        torch.manual_seed(cfg.seed)
        model = build(config)
        parameters = count_parameters(model)
        run.log_params({"model": name, "family": family, "parameters": parameters, "resolved_ff_dim": config.ff_dim})
        described = ", ".join(f"{k}={v}" for k, v in changes.items())
        if changes:
            run.set_tag("seqlab.tuned", described)
        print(f"train {name}: {parameters:,} parameters, {train_set.tokens:,} train tokens" + (f"; changes: {described}" if changes else ""))
        log_epoch = lambda e: run.log_metrics(  # noqa: E731
            {"train_loss": e.train_loss, "valid_loss": e.valid_loss, "epoch_valid_ppl": e.valid_ppl, "tokens_per_s": e.tokens_per_s, "lr": e.lr}, step=e.epoch)
        started = time.perf_counter()
        result = train(model, cfg, train_set.segments.ids, valid.segments.ids, valid.scored, WORK, vocab.sha256,
                       fingerprint(config.as_dict(), params.train.model_dump(), vocab.sha256, dvc_md5(TOKENS)), log_epoch)
        seconds = time.perf_counter() - started
        best = load_checkpoint(f"{WORK}/best.pt", vocab.sha256)
        scorer = NeuralLM(best, cfg.eval_batch_size, cfg.eval_window)
        scores = {split: score(scorer, data, name) for split, data in (("valid", valid), ("test", test))}
        with atomic_path(OUT) as tmp:
            tmp.mkdir()
            shutil.copyfile(f"{WORK}/best.pt", tmp / "model.pt")
            summary = {
                "model": name, "family": "neural", "estimator": config.kind, "order": None, "registered_model": registered_name(family),
                "config": config.as_dict(), "train": params.train.model_dump(), "tuned": changes, "parameters": parameters, "best_epoch": result.best_epoch,
                "epochs_run": len(result.history), "stopped_early": result.stopped_early, "vocab_sha256": vocab.sha256,
                "history": [{k: getattr(e, k) for k in ("epoch", "train_loss", "valid_loss", "valid_ppl", "lr")} for e in result.history], **{split: s.as_dict() for split, s in scores.items()}}
            write_json(tmp / "scores.json", summary)
        with atomic_path(HISTORY) as tmp:
            pd.DataFrame([vars(e) for e in result.history]).to_csv(tmp, index=False, float_format="%.6g")
        plot_learning_curve(result.history, CURVE, name)
        write_json(METRICS, {"model": name, "parameters": parameters, "best_epoch": result.best_epoch,
                             "valid_ppl": scores["valid"].ppl, "test_ppl": scores["test"].ppl,
                             "test_xent_bits": scores["test"].xent_bits, "train_minutes": seconds / 60})
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        run.log_metrics({"best_epoch": result.best_epoch, "train_seconds": seconds, "peak_memory_mb": peak_mb,
                         **scores["valid"].metrics("valid"), **scores["test"].metrics("test")})
        if result.resumed_from:
            run.set_tag("seqlab.resumed_from", result.resumed_from)
        for artifact in (CURVE, HISTORY, f"{OUT}/scores.json"):
            run.log_artifact(artifact)
        example = torch.from_numpy(np.resize(valid.segments.ids, 16).reshape(2, 8))  # two 8-token contexts
        version = run.log_torch_model(
            NextToken(best), example, [f"{OUT}/model.pt", f"{VOCAB}/vocab.tsv", f"{VOCAB}/vocab.json", f"{TOKENS}/tokenizer.json"],
            registered_name(family), version_tags(summary, OUT, TOKENS))
        run.tag_data_hashes("deps", [TOKENS, VOCAB])
        run.tag_data_hashes("outs", [OUT, METRICS, HISTORY, CURVE])
    shutil.rmtree(WORK, ignore_errors=True)
    print(f"train {name}: valid ppl {scores['valid'].ppl:.2f}, test ppl {scores['test'].ppl:.2f} (best epoch {result.best_epoch} "
          f"of {len(result.history)}), {seconds / 60:.1f} min; registered as {registered_name(family)} version {version}")


if __name__ == "__main__":
    main()
