"""The ``seqlab`` console script.

    seqlab score MODEL [--tokens data/tokens/test.txt] [--vocab data/vocab]
        score a token stream with any model (n-gram ``model.npz``, ARPA file, neural ``model.pt``,
        a hybrid's ``hybrid.json``, or a model directory such as ``models/hybrid``)
    seqlab predict --model PATH_OR_URI --context "to be or not to" [--top-k 5]
        the most likely next tokens and their probabilities (any model)
    seqlab generate --model PATH_OR_URI --prompt "To be or not to be" [--max-tokens 60]
            [--temperature 0.8] [--top-k 40] [--seed 1] [--visualize attention.png]
        sample a continuation from a neural model; optionally draw the attention weights as a heatmap
    seqlab transduce WORD [WORD ...] [--model models/seq2seq/attention] [--beam 5] [--nbest 1] [--visualize alignment.png]
        the target sequences of sources with a sequence-to-sequence model (phonemes of words, by default),
        with their log-probabilities; optionally draw the first source's attention alignment
    seqlab ui [--port 5000] [--screenshot docs/mlflow-runs.png]
        the MLflow UI on 127.0.0.1 over the project's tracking store

A model is a file of the project (default ``models/neural/model.pt``; also ``model.npz``, ``hybrid.json``
or a model directory) or an MLflow model URI such as ``models:/seqlab-hybrid@champion``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from seqlab import paths
from seqlab.errors import SeqLabError, exit_on_error


def _score(args: argparse.Namespace) -> None:
    from seqlab.loading import open_model
    from seqlab.scoring import eval_set, score
    from seqlab.tokenize import read_stream
    from seqlab.vocab import load_vocab

    if args.batch_size is not None and args.batch_size < 1:
        raise SeqLabError(f"--batch-size must be at least 1 (got {args.batch_size})")
    vocab = load_vocab(args.vocab)
    batch_size = args.batch_size
    if batch_size is None:  # the pipeline's: a neural model's streams each start from a fresh state
        from seqlab.config import load_params

        batch_size = load_params(paths.PARAMS).train.eval_batch_size if Path(paths.PARAMS).is_file() else 16
    model = open_model(args.model, vocab, batch_size=batch_size)
    lines = read_stream(args.tokens)
    data = eval_set(lines, vocab, 0, str(args.tokens))  # characters: bits per character is not reported here
    result = score(model, data, str(args.model))
    print(f"{args.model}: {result.tokens} tokens ({result.oov_tokens} OOV scored as <unk>, "
          f"{result.zero_prob_tokens} with zero probability)")
    print(f"perplexity {result.ppl:.4f}  cross-entropy {result.xent_nats:.6f} nats = {result.xent_bits:.6f} bits per token")


def _predict(args: argparse.Namespace) -> None:
    from seqlab.generate import predict
    from seqlab.loading import load

    loaded = load(args.model, args.vocab, args.tokenizer)
    for token, probability in predict(loaded, args.context, args.top_k):
        print(f"{probability:.6f}  {token}")


def _generate(args: argparse.Namespace) -> None:
    import sys

    from seqlab.generate import NOT_NEURAL, check_sampling, detokenize, generate, plot_attention
    from seqlab.loading import load

    if args.max_tokens < 1:
        raise SeqLabError(f"--max-tokens must be at least 1 (got {args.max_tokens})")
    check_sampling(args.temperature, args.top_k)
    loaded = load(args.model, args.vocab, args.tokenizer)
    if loaded.network is None:
        raise SeqLabError(f"{args.model}: {NOT_NEURAL}")
    config = loaded.network.config
    if args.visualize and config.kind == "feedforward":  # fail before generating
        raise SeqLabError(f"{args.model}: this model has no attention to draw (model.kind: feedforward)")
    if args.visualize and config.kind == "lstm_attention" and config.attention == "none":
        raise SeqLabError(f"{args.model}: this model has no attention to draw (model.attention: none)")
    result = generate(loaded, args.prompt, args.max_tokens, args.temperature, args.top_k, args.seed, need_weights=bool(args.visualize))
    print(detokenize(loaded, result.tokens))
    print(f"{result.prompt_length} prompt tokens in {result.prompt_seconds * 1000:.1f} ms; "
          f"{len(result.generated)} tokens generated at {result.tokens_per_s:.0f} tokens/s", file=sys.stderr)
    if args.visualize:
        plot_attention(result, args.visualize)
        print(f"attention heatmap: {args.visualize}", file=sys.stderr)


def _transduce(args: argparse.Namespace) -> None:
    from seqlab.transduce import load_transducer, plot_alignment, transduce

    if args.beam < 1 or not 1 <= args.nbest <= args.beam:
        raise SeqLabError(f"--beam must be at least 1 and --nbest between 1 and --beam (got --beam {args.beam} --nbest {args.nbest})")
    loaded = load_transducer(args.model)
    if args.visualize and loaded.model.config.attention == "none":
        raise SeqLabError(f"{args.model}: this model has no attention to draw (seq2seq.attention: none)")
    sources = [loaded.read(text) for text in args.sources]
    empty = next((text for text, source in zip(args.sources, sources) if not source), None)
    if empty is not None:
        raise SeqLabError(f"source {empty!r} is empty")
    unknown = sorted({t for source in sources for t in source if t not in loaded.source_vocab})
    found = transduce(loaded.model, sources, loaded.source_vocab, loaded.target_vocab, loaded.max_length, args.beam, args.nbest,
                      weights=bool(args.visualize))
    for text, hyps in zip(args.sources, found):
        for rank, (tokens, hyp) in enumerate(hyps, start=1):
            prefix = f"{text}\t" if args.nbest == 1 else f"{text}\t{rank}\t"
            print(f"{prefix}{' '.join(tokens)}\t{hyp.score:.4f}")
    if unknown:
        import sys

        print(f"note: {len(unknown)} source symbol(s) unseen in training, read as <unk>: {' '.join(unknown)}", file=sys.stderr)
    if args.visualize:
        tokens, hyp = found[0][0]
        plot_alignment(sources[0], tokens, hyp.weights, args.visualize)
        print(f"attention alignment of {args.sources[0]!r}: {args.visualize}")


def _ui(args: argparse.Namespace) -> None:
    import shutil
    import signal
    import tempfile

    import mlflow

    from seqlab import ui
    from seqlab.config import load_params
    from seqlab.tracking import connect, project_root, tracking_uri

    uri = tracking_uri(project_root())
    base = f"http://{ui.HOST}:{args.port}"
    signal.signal(signal.SIGTERM, _terminated)  # `kill` stops the server too, as Ctrl-C does
    if args.screenshot is None:
        server = ui.serve(uri, args.port)
        try:  # from here on, a Ctrl-C or `kill` at any point stops the server (its own session) too
            print(f"MLflow UI on {base} (Ctrl-C to stop)", flush=True)
            if server.wait() != 0:
                raise SeqLabError(f"mlflow server on {ui.HOST}:{args.port} stopped with exit status {server.returncode}")
        except KeyboardInterrupt:
            print("MLflow UI stopped")
            return
        finally:
            ui.stop(server)
        return
    connect()
    name = load_params(paths.PARAMS).tracking.experiment
    experiment = mlflow.MlflowClient().get_experiment_by_name(name)
    if experiment is None:
        raise SeqLabError(f"{uri}: no experiment {name!r} (params.yaml: tracking.experiment); run `dvc repro` first")
    logs = tempfile.mkdtemp()
    server = ui.serve(uri, args.port, Path(logs) / "mlflow-server.log")
    try:
        ui.look(base, experiment.experiment_id, "hybrid", args.screenshot)
    finally:
        ui.stop(server)
        shutil.rmtree(logs, ignore_errors=True)
    print(f"screenshot of {ui.runs_url(base, experiment.experiment_id)}: {args.screenshot}")


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through the ``finally`` blocks that stop child processes


def _neural_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=paths.DEFAULT_MODEL, help="model file or directory, or an MLflow model URI (models:/NAME/VERSION, models:/NAME@ALIAS)")
    parser.add_argument("--vocab", type=Path, default=Path(paths.VOCAB), help="vocabulary directory (for a checkpoint path)")
    parser.add_argument("--tokenizer", type=Path, default=Path(paths.TOKENIZER), help="tokenizer (for a checkpoint path)")


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="seqlab", description="SeqLab: language models, reproducibly.")
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score a token stream with a model (model.npz, .arpa, model.pt, hybrid.json)")
    score.add_argument("model", type=Path, help="model.npz, a .arpa file, a neural model.pt, a hybrid.json or a model directory")
    score.add_argument("--tokens", type=Path, default=Path(paths.TOKENS) / "test.txt", help="token stream, one sequence per line")
    score.add_argument("--vocab", type=Path, default=Path(paths.VOCAB), help="vocabulary directory")
    score.add_argument("--batch-size", type=int, default=None,
                       help="neural models: parallel streams (default: train.eval_batch_size of ./params.yaml, else 16)")
    score.set_defaults(run=_score)
    predict = commands.add_parser("predict", help="next-token distribution of any model (neural, n-gram, hybrid)")
    _neural_options(predict)
    predict.add_argument("--context", required=True, help="text before the token to predict")
    predict.add_argument("--top-k", type=int, default=5, help="how many tokens to list (0: the whole vocabulary)")
    predict.set_defaults(run=_predict)
    gen = commands.add_parser("generate", help="sample text from a neural model")
    _neural_options(gen)
    gen.add_argument("--prompt", default="", help="text to continue")
    gen.add_argument("--max-tokens", type=int, default=60)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--visualize", type=Path, default=None, metavar="PNG", help="write a heatmap of the attention weights")
    gen.set_defaults(run=_generate)
    trans = commands.add_parser("transduce", help="target sequences of sources with a sequence-to-sequence model (phonemes of words)")
    trans.add_argument("sources", nargs="+", metavar="SOURCE", help="a source (a word, for grapheme-to-phoneme)")
    trans.add_argument("--model", default=f"{paths.SEQ2SEQ}/attention", help="a model folder of the seq2seq stage, or its model.pt")
    trans.add_argument("--beam", type=int, default=5, help="beam size (1: greedy)")
    trans.add_argument("--nbest", type=int, default=1, help="hypotheses per source, best first")
    trans.add_argument("--visualize", type=Path, default=None, metavar="PNG", help="write the first source's attention alignment")
    trans.set_defaults(run=_transduce)
    show = commands.add_parser("ui", help="the MLflow UI over the project's runs, on 127.0.0.1")
    show.add_argument("--port", type=int, default=5000)
    show.add_argument("--screenshot", type=Path, default=None, metavar="PNG",
                      help="save the runs page (sorted by test_ppl) from headless Chromium and stop")
    show.set_defaults(run=_ui)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
