"""The map in docs/architecture.md holds: modules import only from their floor and the floors below, no
import cycles, and the parts that must stay light (the n-gram pyfunc, the space schema, tuned()) import
neither torch nor Ray."""

import ast
import subprocess
import sys

from helpers import REPO

SRC = REPO / "src"

# lowest first; a module may import from its own floor and the floors below (docs/architecture.md)
FLOORS = [
    ("ground", ["seqlab", "seqlab.errors", "seqlab.io", "seqlab.net", "seqlab.determinism", "seqlab.paths", "seqlab.plots"]),
    ("records", ["seqlab.tracking", "seqlab.registry"]),
    ("data", ["seqlab.corpus", "seqlab.pairs", "seqlab.tokenize", "seqlab.vocab", "seqlab.validate", "seqlab.synthetic", "seqlab.tune",
              "seqlab.tune.space"]),
    ("scoring", ["seqlab.scoring", "seqlab.edit_rates"]),
    ("models", ["seqlab.ngram", "seqlab.models", "seqlab.hybrid"]),
    ("params", ["seqlab.config"]),
    ("loading and training", ["seqlab.loading", "seqlab.training", "seqlab.tune.best", "seqlab.transduce"]),
    ("search", ["seqlab.tune.cluster", "seqlab.tune.trial", "seqlab.tune.search", "seqlab.tune.plot", "seqlab.ray_train",
                "seqlab.ngram.ray_engine"]),
    ("faces", ["seqlab.stage", "seqlab.generate", "seqlab.leaderboard", "seqlab.pyfunc_model", "seqlab.pyfunc_transducer", "seqlab.ui", "seqlab.cli"]),
]


def modules() -> dict[str, set[str]]:
    """Every module of src/seqlab and the seqlab modules it imports, at any level of the file."""
    found = {str(p.relative_to(SRC).with_suffix("")).replace("/", ".").removesuffix(".__init__"): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in found.items():
        imports = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imports |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imports |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        # a submodule that reaches a sibling through its own package is not importing upwards
        graph[name] = {i for i in imports if i in found and i != name and not name.startswith(i + ".")}
    return graph


def floor(module: str) -> int:
    """The floor of the most specific prefix listed: ``seqlab.ngram.arpa`` is on ``seqlab.ngram``'s."""
    best = max(((len(prefix), level) for level, (_, prefixes) in enumerate(FLOORS) for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), default=None)
    assert best is not None, f"{module} is on no floor of docs/architecture.md"
    return best[1]


def test_every_module_imports_only_from_its_floor_or_below():
    upward = [f"{m} ({FLOORS[floor(m)][0]}) imports {i} ({FLOORS[floor(i)][0]})"
              for m, imports in modules().items() for i in imports if floor(i) > floor(m)]
    assert upward == []


def test_no_import_cycles():
    graph, cycles = modules(), []

    def visit(module, path):
        for target in graph[module]:
            if target in path:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in done:
                visit(target, path + [target])
        done.add(module)

    done: set[str] = set()
    for module in graph:
        if module not in done:
            visit(module, [module])
    assert cycles == []


def test_the_floors_in_the_docs_are_the_floors_tested():
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name, prefixes in FLOORS:
        assert f"| {name} |" in text, name
        for prefix in prefixes[1:] if name == "ground" else prefixes:
            assert f"`{prefix.removeprefix('seqlab.')}" in text, prefix


def imported_after(code: str) -> set[str]:
    """The top-level packages in sys.modules after running ``code`` in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_the_ngram_pyfunc_loads_and_predicts_without_torch(tmp_path):
    code = f"""
from pathlib import Path
from seqlab.ngram import count, estimate
from seqlab.ngram.model_file import save_model
from seqlab.scoring import Segments
from seqlab.vocab import build_vocab, save_vocab
from seqlab.tokenize import WordTokenizer, save_tokenizer
import seqlab.pyfunc_model, seqlab.stage
from seqlab.loading import load_files
root = Path({str(tmp_path)!r})
lines = [line.split() for line in ["the cat sat", "a dog sat on the mat"] * 3]
vocab = build_vocab(lines)
save_vocab(vocab, root / "vocab")
save_tokenizer(WordTokenizer(r"\\S+", False), root / "tokenizer.json")
bos, eos = vocab.index["<s>"], vocab.index["</s>"]
model = estimate("mkn", count(Segments.from_sentences([vocab.encode(l) for l in lines], bos, eos), 3, len(vocab)), len(vocab), bos)
save_model(model, root / "model.npz", vocab.sha256)
loaded = load_files(root, "test")
import numpy as np
assert abs(np.exp(loaded.scorer.next_log_probs([bos, vocab.index["the"]])).sum() - 1) < 1e-9
"""
    loaded = imported_after(code)
    assert "numpy" in loaded and "mlflow" in loaded  # it did load the model and the pyfunc's module
    assert "torch" not in loaded and "ray" not in loaded


def test_the_space_schema_params_and_tuned_import_no_ray():
    loaded = imported_after("import seqlab.config, seqlab.tune.space, seqlab.tune.best")
    assert "pydantic" in loaded and "ray" not in loaded and "torch" not in loaded
    assert "ray" not in imported_after("import seqlab.training.loop, seqlab.training.lm, seqlab.stage")
