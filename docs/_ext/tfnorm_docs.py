"""Local Sphinx extension of the tfnorm docs.

* ``.. tfnorm-help:: bench`` renders ``tfnorm bench --help`` from the real parser
  (:func:`tfnorm.cli.build_parser`), so the page follows the code.
* ``.. tfnorm-registry::`` renders the registry (short name, class, kind, traits) as a table.
* Google-style ``Args:`` entries whose list of names wraps onto a second line
  (``beta_initializer, gamma_initializer,`` / ``beta_constraint: ...``) are joined
  into one entry before napoleon reads them.
* A layer class shows the arguments of its ``__init__``, not Keras' ``Layer.__new__``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

_SECTION = re.compile(r"^(\s*)(Args|Arguments|Call arguments):\s*$")


def join_wrapped_names(app, what, name, obj, options, lines):
    """Joins an argument entry's wrapped name list (a line ending in a comma) with its next line."""
    out, i, item_indent = [], 0, None
    while i < len(lines):
        line = lines[i]
        header = _SECTION.match(line)
        if header:
            item_indent = None
            out.append(line)
            i += 1
            section_indent = len(header.group(1))
            # the section runs while lines are blank or indented deeper than its header
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > section_indent
            ):
                current = lines[i]
                indent = len(current) - len(current.lstrip())
                if current.strip() and item_indent is None:
                    item_indent = indent
                while (
                    indent == item_indent
                    and current.rstrip().endswith(",")
                    and ":" not in current
                    and i + 1 < len(lines)
                    and len(lines[i + 1]) - len(lines[i + 1].lstrip()) == item_indent
                ):
                    i += 1
                    current = current.rstrip() + " " + lines[i].strip()
                out.append(current)
                i += 1
            continue
        out.append(line)
        i += 1
    lines[:] = out


def init_signature(app, what, name, obj, options, signature, return_annotation):
    """A Keras layer's signature from its ``__init__`` (Keras' ``Layer.__new__`` hides it)."""
    if what != "class" or not inspect.isclass(obj):
        return None
    import keras

    if not issubclass(obj, keras.layers.Layer):
        return None
    params = list(inspect.signature(obj.__init__).parameters.values())[1:]  # without self
    return str(inspect.Signature(params)), return_annotation


class CommandHelp(SphinxDirective):
    """``.. tfnorm-help:: SUBCOMMAND``: the sub-command's ``--help`` text as a literal block."""

    required_arguments = 1

    def run(self):
        from tfnorm import cli

        name = self.arguments[0]
        parser = cli.build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if name not in sub.choices:
            raise self.error(
                f"tfnorm-help: unknown sub-command {name!r}; known: {', '.join(sub.choices)}"
            )
        saved = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "92"  # argparse wraps to $COLUMNS
        try:
            text = sub.choices[name].format_help()
        finally:
            if saved is None:
                os.environ.pop("COLUMNS", None)
            else:
                os.environ["COLUMNS"] = saved
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


class RegistryTable(SphinxDirective):
    """``.. tfnorm-registry::``: every short name of :mod:`tfnorm.registry` with its traits."""

    def run(self):
        from tfnorm import registry

        def mark(flag):
            return "yes" if flag else ""

        rows = []
        for short in registry.available(None):
            cls = registry.resolve(short)
            traits = registry.traits(cls)
            rows.append(
                f"   * - ``{short}``\n"
                f"     - :class:`~tfnorm.{cls.__name__}`\n"
                f"     - {traits.kind}\n"
                f"     - {mark(traits.groups)}\n"
                f"     - {mark(traits.batch_statistics)}\n"
                f"     - {mark(traits.synchronized)}"
            )
        text = (
            "\n.. list-table::\n   :header-rows: 1\n   :widths: auto\n\n"
            "   * - short name\n     - class\n     - kind\n     - groups\n"
            "     - batch stats\n     - sync\n" + "\n".join(rows) + "\n"
        )
        container = nodes.container()
        self.state.nested_parse(
            StringList(text.splitlines(), source="tfnorm-registry"), self.content_offset, container
        )
        return container.children


def setup(app):
    app.connect("autodoc-process-docstring", join_wrapped_names, priority=100)
    app.connect("autodoc-process-signature", init_signature)
    app.add_directive("tfnorm-help", CommandHelp)
    app.add_directive("tfnorm-registry", RegistryTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
