"""What a MONAI bundle config may ask for without ``--trust-model-code``.

MONAI's ``ConfigParser`` runs ``$`` expressions (``eval``), instantiates any ``_target_``
(``pydoc.locate``: any importable callable, ``os.system`` included), expands ``%`` macros
(reads other files) and honours ``_mode_`` (``debug`` starts pdb). We parse only three
sections (``network_def``, ``preprocessing``, ``inferer``); ``untrusted_sections`` walks them
and every item they reference (``@id``), refuses the above in one line naming the config
file and the item, and returns just those sections, so nothing else of the file reaches
the parser. Allowed ``_target_``s: classes of MONAI's networks (``monai.networks.nets``),
transforms and inferers, less those that write files or call a given function.
"""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

from agg2exp_core.models.trust import refusal

SECTIONS = ("network_def", "preprocessing", "inferer")
ALLOWED_MODULES = ("monai.networks.nets.", "monai.transforms.", "monai.inferers.")
DENIED_TARGETS = {"SaveImage", "SaveImaged", "Lambda", "Lambdad", "RandLambda", "RandLambdad",
                  "WriteFileMapping", "WriteFileMappingd"}
# An argument naming a dotted Python path is imported by some MONAI classes (LoadImage's reader,
# the inferers' merger_cls, FlexibleUNet's backbone): refused, as a _target_ outside the list would be.
DOTTED_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
SEP = "::"


def untrusted_sections(config: dict, config_file: Path, locator) -> dict:
    """The sections the loader parses plus the items they reference, checked (see module doc)."""
    keep: dict = {}
    pending = [s for s in SECTIONS if s in config]
    while pending:
        item_id = pending.pop()
        top = item_id.split(SEP)[0]
        if top in keep:
            continue
        keep[top] = config[top]
        for ref in _walk(config[top], top, config_file, locator):
            if _lookup(config, ref) is _MISSING:
                raise refusal(config_file, f"{top}: reference @{ref} names no item of the config")
            pending.append(ref)
    return keep


_MISSING = object()


def _lookup(config, ref: str):
    node = config
    for part in ref.split(SEP):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return _MISSING
    return node


def _walk(node, where: str, config_file: Path, locator):
    """Yield the ids ``node`` references; refuse what would run code."""
    if isinstance(node, dict):
        if "_target_" in node:
            _check_target(node, where, config_file, locator)
        for key, value in node.items():
            yield from _walk(value, f"{where}{SEP}{key}", config_file, locator)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{where}{SEP}{i}", config_file, locator)
    elif isinstance(node, str):
        yield from _string(node, where, config_file)


def _string(value: str, where: str, config_file: Path):
    if value.startswith("$"):
        raise refusal(config_file, f"{where} is a $ expression, which MONAI evaluates as Python")
    if value.startswith("%"):
        raise refusal(config_file, f"{where} is a % macro, which reads another config file")
    if value.startswith("@"):
        ref = value[1:].replace("#", SEP)
        if not ref or ref.startswith(":"):
            raise refusal(config_file, f"{where}: relative reference {value!r} is not supported")
        yield ref
    elif DOTTED_PATH.match(value) and not where.endswith(f"{SEP}_target_"):
        raise refusal(config_file, f"{where} names the Python object {value!r}, which MONAI would import")


def _check_target(node: dict, where: str, config_file: Path, locator) -> None:
    target = node["_target_"]
    if node.get("_mode_", "default") != "default":
        raise refusal(config_file, f"{where}: _mode_ {node['_mode_']!r}")
    if not isinstance(target, str) or not _allowed(target, locator):
        raise refusal(config_file, f"{where}: _target_ {target!r} is not a MONAI network, transform or inferer")


def _allowed(target: str, locator) -> bool:
    if "." in target:
        module, _, name = target.rpartition(".")
        modules = [module] if f"{module}.".startswith(ALLOWED_MODULES) else []
    else:
        found = locator.get_component_module_name(target)
        modules, name = ([found] if isinstance(found, str) else list(found or [])), target
    if not modules or name in DENIED_TARGETS:
        return False
    return all(f"{m}.".startswith(ALLOWED_MODULES) and _is_class(m, name) for m in modules)


def _is_class(module: str, name: str) -> bool:
    try:
        return inspect.isclass(getattr(importlib.import_module(module), name))  # module is under monai.*
    except (ImportError, AttributeError):
        return False
