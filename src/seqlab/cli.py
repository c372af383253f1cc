"""The ``seqlab`` console script.

    seqlab score MODEL [--tokens data/tokens/test.txt] [--vocab data/vocab]

scores a token stream with an n-gram model (``model.npz`` or an ARPA file) by the project's
counting convention and prints perplexity and cross-entropy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from seqlab.errors import exit_on_error


def _score(args: argparse.Namespace) -> None:
    from seqlab.evaluate import eval_set, score
    from seqlab.ngram.arpa import read_arpa
    from seqlab.ngram.model_file import load_model
    from seqlab.tokenize import read_stream
    from seqlab.vocab import BOS, load_vocab

    vocab = load_vocab(args.vocab)
    if args.model.suffix == ".npz":
        model = load_model(args.model, vocab.sha256)
    else:
        model = read_arpa(args.model, vocab.index, vocab.index[BOS])
    lines = read_stream(args.tokens)
    data = eval_set(lines, vocab, 0, str(args.tokens))  # characters: bits per character is not reported here
    result = score(model, data, str(args.model))
    print(f"{args.model}: {result.tokens} tokens ({result.oov_tokens} OOV scored as <unk>, "
          f"{result.zero_prob_tokens} with zero probability)")
    print(f"perplexity {result.ppl:.4f}  cross-entropy {result.xent_nats:.6f} nats = {result.xent_bits:.6f} bits per token")


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="seqlab", description="SeqLab: language models, reproducibly.")
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score a token stream with an n-gram model (model.npz or ARPA)")
    score.add_argument("model", type=Path, help="model.npz or a .arpa file")
    score.add_argument("--tokens", type=Path, default=Path("data/tokens/test.txt"), help="token stream, one sequence per line")
    score.add_argument("--vocab", type=Path, default=Path("data/vocab"), help="vocabulary directory")
    score.set_defaults(run=_score)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
