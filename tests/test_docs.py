"""The documentation cannot rot silently: every Python block of README.md and docs/*.md
runs, every public name of the API reference has a docstring, and no page holds a path of
a development machine."""

import importlib
import inspect
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
# Methods Keras calls, documented by Keras itself.
KERAS_METHODS = {"call", "build", "get_config", "from_config", "compute_output_spec",
                 "compute_mask", "compute_output_shape"}


def python_blocks(page):
  return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)],
                         ids=lambda p: p.name)
def test_every_python_block_of_a_page_runs(page):
  """A page's blocks run in order in one namespace, as a reader would paste them."""
  namespace = {"__name__": f"docs_{page.stem}"}
  for block in python_blocks(page):
    exec(compile(block, str(page), "exec"), namespace)  # pylint: disable=exec-used


def reference_targets():
  for page in sorted((ROOT / "docs" / "reference").glob("*.md")):
    yield from re.findall(r"^::: (\S+)$", page.read_text(encoding="utf-8"), re.M)


def resolve(target):
  """The module or object a `::: target` line names (hparams and problems install under
  vqkeras)."""
  if target.split(".")[0] in ("hparams", "problems"):
    target = "vqkeras." + target
  parts = target.split(".")
  for i in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module(".".join(parts[:i]))
    except ImportError:
      continue
    for name in parts[i:]:
      obj = getattr(obj, name)
    return obj
  raise ImportError(target)


def undocumented(obj):
  """The public names under `obj` (a module's own classes and functions, a class's own
  methods) without a docstring."""
  missing = [] if inspect.getdoc(obj) else [obj.__qualname__ if not inspect.ismodule(obj)
                                             else obj.__name__]
  if inspect.ismodule(obj):
    members = [m for name, m in vars(obj).items() if not name.startswith("_") and
               (inspect.isclass(m) or inspect.isfunction(m)) and
               getattr(m, "__module__", None) == obj.__name__]
    for member in members:
      missing += undocumented(member)
  elif inspect.isclass(obj):
    for name, member in vars(obj).items():
      if (name.startswith("_") or name in KERAS_METHODS or
          not (inspect.isfunction(member) or isinstance(member, property))):
        continue
      if not inspect.getdoc(getattr(obj, name)):   # an override may inherit its doc
        missing.append(f"{obj.__qualname__}.{name}")
  return missing


def test_every_public_name_of_the_reference_has_a_docstring():
  missing = [name for target in reference_targets() for name in undocumented(resolve(target))]
  assert not missing, "no docstring: " + ", ".join(missing)


def test_no_page_holds_a_path_of_a_development_machine():
  for page in PAGES:
    text = page.read_text(encoding="utf-8")
    for path in ("/work/", "/root/", "/tmp/", "/check/"):
      assert path not in text, f"{page.name} holds {path}"
