"""Every setting is declared once (type, bound, default, doc on its field): help, docs/settings.md and the
errors all come from that declaration, and these tests check that they agree."""

import typing
from pathlib import Path
from typing import Literal

import pytest
from annotated_types import Ge, Gt, Le, Lt

from banel.cli import main, settings_markdown
from banel.config import RunConfig, SettingError, from_dict, settings
from banel.methods import BUILTIN as METHODS
from banel.methods import resolve_method
from banel.tasks import BUILTIN as TASKS
from banel.tasks import resolve_task

DOCS = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def groups():
    """(settings class, prefix) of the run, of every built-in method's table and of every built-in task's options."""
    out = [(RunConfig, "")]
    out += [(resolve_method(m).options, f"{m}.") for m in METHODS if resolve_method(m).options is not None]
    out += [(resolve_task(t)[1].options, "task_options.") for t in TASKS if resolve_task(t)[1].options is not None]
    return out


def leaves():
    return [(cls, prefix, s) for cls, prefix in groups() for s in settings(cls, prefix)]


def test_every_setting_has_a_doc():
    missing = [s.path for _, _, s in leaves() if not s.doc]
    assert not missing and len(leaves()) > 150


def test_every_setting_is_listed_by_banel_settings_and_in_docs_settings_md(capsys):
    assert main(["settings"]) == 0
    text = capsys.readouterr().out
    docs = DOCS.read_text(encoding="utf-8")
    for _, _, s in leaves():
        if s.path in ("options", "task_options"):
            continue
        assert f"  {s.path} ({s.type}, default " in text, s.path
        assert f"| `{s.path}` |" in docs and s.doc.replace("|", "\\|") in docs, s.path


def test_every_setting_is_in_run_help_all(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help-all"])
    text = capsys.readouterr().out
    missing = [s.path for _, _, s in leaves() if s.path not in ("options", "task_options")]
    missing = [p for p in missing if f"  {p} (" not in text]
    assert not missing


def test_docs_settings_md_is_what_the_declarations_generate_now():
    # regenerate with: PYTHONPATH=src python -m banel.cli settings --markdown > docs/settings.md
    assert DOCS.read_text(encoding="utf-8") == settings_markdown()


def _bad_value(cls, name):
    """A value just outside the declared bound of cls.name (None if the field declares none)."""
    info = cls.__pydantic_fields__[name]
    if typing.get_origin(info.annotation) is Literal:
        return "no-such-value"
    for m in info.metadata:
        if isinstance(m, Ge):
            return m.ge - 1
        if isinstance(m, Gt):
            return m.gt
        if isinstance(m, Le):
            return m.le + 1
        if isinstance(m, Lt):
            return m.lt
    return None


def _nested(path, value):
    data = value
    for part in reversed(path.split(".")):
        data = {part: data}
    return data


def test_a_bad_value_of_any_setting_names_its_full_dotted_path_and_what_it_may_be():
    checked = 0
    for cls, prefix, s in leaves():
        if not s.bound:
            continue
        rel = s.path[len(prefix) :]
        owner = cls
        for part in rel.split(".")[:-1]:
            owner = owner.__pydantic_fields__[part].annotation  # a nested settings class
        bad = _bad_value(owner, rel.split(".")[-1])
        with pytest.raises(SettingError) as err:
            from_dict(cls, _nested(rel, bad), prefix)
        assert err.value.path == s.path, (s.path, str(err.value))
        got = repr(bad) if isinstance(bad, str) else str(bad)
        assert s.bound in str(err.value) and str(err.value).endswith(f"got {got}"), str(err.value)
        checked += 1
    assert checked > 100


def test_errors_read_as_the_user_wrote_the_setting():
    with pytest.raises(SettingError, match=r"^banel.negative_fit.lr must be > 0, got -1$"):
        from_dict(resolve_method("banel").options, {"negative_fit": {"lr": -1}}, "banel.")
    with pytest.raises(SettingError, match=r"^oracle.executor must be one of 'inline', 'thread', 'process', 'ray'"):
        from_dict(RunConfig, {"oracle": {"executor": "gpu"}})
    with pytest.raises(SettingError, match=r"^eval.every must be an integer; got 'often'$"):
        from_dict(RunConfig, {"eval": {"every": "often"}})
