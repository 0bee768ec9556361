"""The public API is an inventory: the ``__all__`` of each module users import must match tests/api_surface.json.

The pinned modules are the ones the README and docs import from (``USER_MODULES``); the other modules are the
implementation (one file per stage, CLI subcommands, training internals): each still declares an ``__all__`` of
names it defines, none private, but renaming inside them is not an API change. Removing or adding a pinned name
fails here until the inventory is edited on purpose. After an intended change, regenerate it and review the diff:

    python tests/test_api_surface.py --update
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

if __name__ == "__main__":  # `python tests/test_api_surface.py --update` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contrimix_aug

INVENTORY = Path(__file__).with_name("api_surface.json")
UPDATE_HINT = "If the change is intended, run `python tests/test_api_surface.py --update` and commit the diff."


USER_MODULES = ("contrimix_aug", "contrimix_aug.albumentations", "contrimix_aug.data", "contrimix_aug.functional",
                "contrimix_aug.quality", "contrimix_aug.training", "contrimix_aug.viz", "contrimix_aug.weights")
"""What users import: the package (ContriMix, ContriMixNormalize, load_model, ...), the albumentations adapter, the
data registry and loaders, the functional core, the quality measures, training, pictures and the weights registry."""


def public_modules() -> list[str]:
    """``contrimix_aug`` and every submodule whose dotted path has no component starting with ``_``."""
    names = ["contrimix_aug"]
    for info in pkgutil.walk_packages(contrimix_aug.__path__, "contrimix_aug."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def current_surface() -> dict[str, list[str]]:
    surface = {}
    for name in USER_MODULES:
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        surface[name] = None if exported is None else sorted(exported)
    return surface


def load_inventory() -> dict[str, list[str]]:
    if not INVENTORY.is_file():  # the tests below then fail with this hint
        return {}
    return json.loads(INVENTORY.read_text())


def test_inventory_exists():
    assert INVENTORY.is_file(), f"{INVENTORY} is missing. {UPDATE_HINT}"


def test_inventory_is_sorted_json():
    inventory = load_inventory()
    assert list(inventory) == sorted(inventory)
    assert all(names == sorted(names) for names in inventory.values())


def test_the_inventory_pins_the_user_modules():
    assert set(load_inventory()) == set(USER_MODULES), UPDATE_HINT
    assert set(USER_MODULES) <= set(public_modules())


@pytest.mark.parametrize("module_name", [m for m in public_modules() if m not in USER_MODULES])
def test_implementation_modules_declare_what_they_define(module_name):
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} defines no __all__ (every non-private module must)."
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{module_name}.__all__ exports names the module does not define: {missing}"


@pytest.mark.parametrize("module_name", sorted(load_inventory()))
def test_module_all_matches_inventory(module_name):
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} defines no __all__ (every public module must)."
    assert len(exported) == len(set(exported)), f"{module_name}.__all__ lists a name twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{module_name}.__all__ exports names the module does not define: {missing}"
    want = set(load_inventory()[module_name])
    added, removed = sorted(set(exported) - want), sorted(want - set(exported))
    assert not added and not removed, f"{module_name}: added {added}, removed {removed}. {UPDATE_HINT}"


def _exported() -> dict[str, list[str]]:
    return {name: list(getattr(importlib.import_module(name), "__all__", None) or []) for name in public_modules()}


def test_no_private_helper_or_register_hook_is_exported():
    """``__all__`` lists public API only: no ``_private`` helper (dunders such as ``__version__`` aside), and none of
    the old per-module ``register`` CLI hooks (argument parsing lives in contrimix_aug.cli)."""
    private = {m: [n for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
               for m, names in _exported().items()}
    assert not {m: n for m, n in private.items() if n}, "private names exported"
    register = [m for m, names in _exported().items() if "register" in names]
    assert not register, f"`register` exported by {register}"


# A module name used twice is a naming bug ("one place per concept, names that say what a file is"): a module file
# and a package directory count alike (``data/`` and ``cli/data.py`` would clash).


def test_no_module_name_is_used_twice():
    root = Path(contrimix_aug.__file__).parent
    by_name: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py") or "__pycache__" in path.parts:
            continue
        by_name.setdefault(path.stem, []).append(str(path.relative_to(root.parent)))
    for pkg in sorted(p.parent for p in root.rglob("__init__.py") if p.parent != root):
        by_name.setdefault(pkg.name, []).append(str(pkg.relative_to(root.parent)) + "/")
    duplicates = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not duplicates, f"module names used more than once under contrimix_aug/: {duplicates}"
    assert "config" not in by_name  # the two config.py files were renamed model_config.py / train_config.py


def test_top_level_names():
    """The names a user starts from stay importable from the package itself."""
    for name in ("ContriMix", "ContriMixNormalize", "ContriMixModel", "ModelConfig", "functional", "load_model",
                 "weights_path", "WeightsMeta", "save_weights", "available_weights"):
        assert name in contrimix_aug.__all__


def test_optional_dependencies_not_imported():
    """``import contrimix_aug`` must not pull in albumentations or torchvision (optional adapters only)."""
    code = (
        "import sys, contrimix_aug\n"
        "print(sorted(m for m in ('albumentations', 'torchvision') if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(__doc__)
    surface = current_surface()
    undocumented = [m for m, names in surface.items() if names is None]
    if undocumented:
        sys.exit(f"these public modules define no __all__; add one first: {undocumented}")
    INVENTORY.write_text(json.dumps(surface, indent=2, sort_keys=True) + "\n")
    print(f"wrote {INVENTORY} ({len(surface)} modules)")
