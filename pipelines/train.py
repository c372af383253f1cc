"""train: the neural LM of params.yaml (model, train), with the tune stage's best configuration put in
(models/tune/best_config.json) -> models/neural/ (model.pt, scores.json), metrics/train.json,
metrics/train_history.csv, plots/learning_curve.png.

`train.py --baseline NAME` trains that entry of params.yaml's baselines instead (the same configuration
with its changes) -> models/baselines/NAME/, metrics/baselines/NAME.json, NAME_history.csv, NAME.png.

An interrupted run (Ctrl-C, kill -9) resumes from its checkpoints/ folder on the next `dvc repro`.
With `train.workers: N` (N > 1) the same training runs data-parallel on N Ray Train workers
(seqlab.ray_train), on tune.address's cluster or a local Ray instance.
"""

import argparse
import resource
import shutil
import time

import pandas as pd
import torch

from seqlab import paths, stage
from seqlab.config import dotted, with_changes
from seqlab.determinism import fix_threads
from seqlab.errors import SeqLabError, exit_on_error
from seqlab.io import atomic_path, dvc_md5, write_json
from seqlab.models import build, config_from_params, count_parameters, output_layer
from seqlab.models.checkpoint import load_checkpoint
from seqlab.models.neural_lm import NeuralLM
from seqlab.registry import neural_family, registered_name
from seqlab.scoring import Summary, load_eval_set, score
from seqlab.training import fingerprint, fit
from seqlab.training.curve import plot_learning_curve
from seqlab.training.lm import LanguageModelTask
from seqlab.tune.best import tuned
from seqlab.vocab import load_vocab


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", help="an entry of params.yaml's baselines")
    args = parser.parse_args()
    params, changes = tuned(stage.params(), paths.TUNE_BEST)
    if args.baseline is not None:
        if args.baseline not in params.baselines:
            raise SeqLabError(f"params.yaml: baselines.{args.baseline}: no such baseline (have: {', '.join(params.baselines) or 'none'})")
        changes = {**changes, **dotted(params.baselines[args.baseline], f"baselines.{args.baseline}")}
        params = with_changes(params, changes, f"params.yaml: baselines.{args.baseline}")
    out = paths.neural_outputs(args.baseline)
    threads = fix_threads()
    vocab = load_vocab(paths.VOCAB)
    config = config_from_params(params.model.model_dump(), len(vocab))
    cfg = params.train
    family = neural_family(config.kind, config.rnn, config.attention)
    name = args.baseline or (f"{config.rnn}-{config.attention}" if family == f"{config.rnn}_attention" else family)  # lstm-dot, ...
    with stage.tracked(f"train {name}", params, "model", "train", outs=(out.folder, out.metrics, out.history, out.curve)) as run:
        train_set, valid, test = (load_eval_set(paths.TOKENS, split, vocab) for split in ("train", "valid", "test"))
        torch.manual_seed(cfg.seed)
        model = build(config)
        parameters = count_parameters(model)
        run_params = {"model": name, "family": family, "parameters": parameters, "resolved_ff_dim": config.ff_dim,
                         "torch_threads": threads}
        run.log_params(run_params)  # before training: a run stopped half-way still says what it trained
        described = ", ".join(f"{k}={v}" for k, v in changes.items())
        if changes:
            run.set_tag("seqlab.tuned", described)
        print(f"train {name}: {parameters:,} parameters, {train_set.tokens:,} train tokens" + (f"; changes: {described}" if changes else ""))
        _, fitted = output_layer(params.model.model_dump(), len(vocab))
        if fitted:
            print(f"train {name}: {fitted}")
        log_round = lambda r: run.log_metrics(  # noqa: E731
            {"train_loss": r.train_loss, "valid_loss": r.valid_loss, "round_valid_ppl": r.valid_ppl, "tokens_per_s": r.tokens_per_s,
             "lr": r.lr, "tokens_seen": r.tokens}, step=r.round)
        started = time.perf_counter()
        task = LanguageModelTask(train_set.segments.ids, valid.segments.ids, valid.scored, vocab.sha256)
        run_fingerprint = fingerprint(config.as_dict(), cfg.model_dump(), vocab.sha256, dvc_md5(paths.TOKENS))
        if cfg.workers > 1:
            from seqlab.ray_train import fit_on_workers

            result = fit_on_workers(config, task, cfg, params.tune, out.checkpoints, run_fingerprint, log_round)
        else:
            result = fit(model, task, cfg, out.checkpoints, run_fingerprint, log_round)
        seconds = time.perf_counter() - started
        best = load_checkpoint(f"{out.checkpoints}/best.pt", vocab.sha256)
        scorer = NeuralLM(best, cfg.eval_batch_size, cfg.eval_window)
        scores = {split: score(scorer, data, name) for split, data in (("valid", valid), ("test", test))}
        summary = Summary(name, "neural", config.kind, None, registered_name(family), {
            "config": config.as_dict(), "train": cfg.model_dump(), "tuned": changes, "parameters": parameters,
            "best_round": result.best_round, "rounds_run": len(result.history), "tokens_seen": result.history[-1].tokens,
            "stopped_early": result.stopped_early},
            vocab.sha256, scores["valid"], scores["test"],
            [{k: getattr(r, k) for k in ("round", "tokens", "train_loss", "valid_loss", "valid_ppl", "lr")} for r in result.history])
        with atomic_path(out.folder) as tmp:
            tmp.mkdir()
            shutil.copyfile(f"{out.checkpoints}/best.pt", tmp / "model.pt")
            write_json(tmp / "scores.json", summary.as_dict())
        with atomic_path(out.history) as tmp:
            pd.DataFrame([vars(e) for e in result.history]).to_csv(tmp, index=False, float_format="%.6g")
        plot_learning_curve(result.history, out.curve, name)
        write_json(out.metrics, {"model": name, "parameters": parameters, "best_round": result.best_round,
                                 "valid_ppl": scores["valid"].ppl, "test_ppl": scores["test"].ppl,
                                 "test_xent_bits": scores["test"].xent_bits, "train_minutes": seconds / 60})
        if result.resumed_from:
            run.set_tag("seqlab.resumed_from", result.resumed_from)
        version = stage.publish(
            run, summary, out.folder, {"model": f"{out.folder}/model.pt", "scores": f"{out.folder}/scores.json"},
            stage.example_context(valid, vocab), params=run_params,
            metrics={"best_round": result.best_round, "train_seconds": seconds,
                     "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
            artifacts=[out.curve, out.history, f"{out.folder}/scores.json"], outs=[out.metrics, out.history, out.curve])
    shutil.rmtree(out.checkpoints, ignore_errors=True)
    print(f"train {name}: valid ppl {scores['valid'].ppl:.2f}, test ppl {scores['test'].ppl:.2f} (best round {result.best_round} "
          f"of {len(result.history)}, {result.history[-1].tokens:,} tokens seen), {seconds / 60:.1f} min; registered as {summary.registered_model} version {version}")


if __name__ == "__main__":
    main()
