"""Issue 24, kinds 1, 2, 5, 6: outputs never replace what they must not, one writer per run directory, output
options checked before the work, no silent reinterpretation. Replayed through the command line as a user would
(test_hostile.py's Box: one stderr line, exit 2, the sandbox unchanged)."""
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from test_hostile import (IS_ROOT, RECIPE, base_env, box, copy, data, model, run, shared,  # noqa: F401 (fixtures)
                          train_args, tree)

from dsmctl.fileio import WriteError, atomic_path, hold_lock, write_rows
from dsmctl.outputs import LOCK_NAME


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def kind(path):
    return stat.S_IFMT(os.lstat(path).st_mode)


# ================================================================ kind 1: what an output may replace

def special(where, what):
    """A FIFO, a socket, a character device like /dev/null (root only), or links to a file / to nowhere."""
    p = where / f"{what}.csv"
    if what == "fifo":
        os.mkfifo(p)
    elif what == "socket":
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()
    elif what == "chardev":
        if not IS_ROOT:
            pytest.skip("making a device node needs root")
        os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own: never the system's
    elif what == "link":
        (where / "target.csv").write_text("keep me\n")
        p.symlink_to(where / "target.csv")
    elif what == "dangling":
        p.symlink_to(where / "nowhere.csv")
    return p


SPECIALS = ["fifo", "socket", "chardev", "link", "dangling"]


@pytest.mark.parametrize("what", SPECIALS)
@pytest.mark.parametrize("cmd", ["eval-nll", "dimension"])
def test_special_file_or_link_as_output_is_refused_and_stays(cmd, what, box, model):
    p = special(box.path, what)
    before = kind(p)
    option = "--per-image" if cmd == "eval-nll" else "--out"
    box.bad(cmd, model, option, p, "--device", "cpu", needles=[option, str(p)])
    assert kind(p) == before
    if what == "link":
        assert (box.path / "target.csv").read_text() == "keep me\n"


@pytest.mark.parametrize("what", ["fifo", "chardev", "link"])
def test_plot_onto_a_special_file_is_refused(what, box, model):
    p = special(box.path, what).rename(box.path / f"{what}.png")
    box.bad("dimension", model, "--plot", p, "--device", "cpu", needles=["--plot", str(p)])
    assert kind(p) == (stat.S_IFLNK if what == "link" else stat.S_IFIFO if what == "fifo" else stat.S_IFCHR)


@pytest.mark.parametrize("what", ["fifo", "link", "dangling", "dir"])
def test_atomic_writes_never_replace_a_special_file(what, tmp_path):
    """The last line of defence, for every writer (model files, tables, plots, run files)."""
    if what == "dir":
        p = tmp_path / "d.csv"
        p.mkdir()
    else:
        p = special(tmp_path, what)
    before = kind(p)
    with pytest.raises(WriteError, match="regular file"):
        write_rows(p, [{"a": 1}])
    with pytest.raises(WriteError):
        with atomic_path(p) as tmp:
            Path(tmp).write_text("x")
    assert kind(p) == before and [q.name for q in tmp_path.iterdir() if ".tmp-" in q.name] == []


def test_sample_out_onto_a_fifo_is_refused(box, model):
    p = special(box.path, "fifo")
    box.bad("sample", model, "--n", "2", "--steps", "2", "--out", p, "-q", needles=["--out", str(p), "fifo"])
    assert kind(p) == stat.S_IFIFO


def run_files(run_dir):
    return {p.relative_to(run_dir): sha(p) for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.parametrize("cmd,option,name", [
    ("eval-nll", "--per-image", "model.safetensors"),
    ("eval-nll", "--per-image", "metrics.jsonl"),
    ("eval-nll", "--per-image", "model-raw.safetensors"),
    ("dimension", "--out", "metrics.jsonl"),
    ("dimension", "--out", "model.safetensors"),
    ("dimension", "--plot", "recipe.yaml"),
    ("eval-nll", "--per-image", "checkpoints/step-0000004/rows.csv"),
    ("dimension", "--out", "checkpoints/rows.csv"),
])
def test_an_output_onto_the_run_being_read_is_refused(cmd, option, name, box, run):
    mine = copy(run, box.path / "run")
    before = run_files(mine)
    target = mine / name
    box.bad(cmd, mine, option, target, "--device", "cpu", needles=[option, str(target)])
    assert run_files(mine) == before


def test_an_output_into_a_prepared_data_dir_or_onto_the_model_is_refused(box, data, model):
    d = copy(data, box.path / "data")
    box.bad("eval-nll", model, "--per-image", d / "rows.csv", needles=["--per-image", "prepared"])
    m = copy(model, box.path / "m.safetensors")
    h = sha(m)
    box.bad("eval-nll", m, "--per-image", m, needles=["--per-image", str(m)])
    box.bad("dimension", m, "--out", m, needles=["--out", str(m)])
    assert sha(m) == h
    box.bad("sample", model, "--n", "2", "--out", d, "-q", needles=["--out", "prepared"])


@pytest.mark.parametrize("cmd,option,suffix", [("eval-nll", "--per-image", ".csv"), ("dimension", "--out", ".jsonl"),
                                               ("dimension", "--plot", ".png")])
@pytest.mark.parametrize("name", ["newdir{}/", "sub/newdir{}/", "./", "."])
def test_a_name_ending_in_slash_is_a_directory_not_a_file(cmd, option, suffix, name, box, model):
    (box.path / "sub").mkdir()
    name = name.format(suffix)
    box.bad(cmd, model, option, name, "--device", "cpu", needles=[option, "names a directory"])
    assert not (box.path / f"newdir{suffix}").exists() and not (box.path / "sub" / f"newdir{suffix}").exists()


@pytest.mark.parametrize("cmd,option,name", [
    ("eval-nll", "--per-image", "rows.parquet"), ("eval-nll", "--per-image", "rows.txt"),
    ("eval-nll", "--per-image", "rows"), ("dimension", "--out", "rows.parquet"), ("dimension", "--out", "rows.json"),
    ("dimension", "--plot", "curves.xyz"), ("dimension", "--plot", "curves"), ("dimension", "--plot", "curves.csv"),
])
def test_an_output_suffix_that_is_not_written_is_refused_naming_the_accepted_ones(cmd, option, name, box, model):
    accepted = ".png" if option == "--plot" else ".jsonl"
    box.bad(cmd, model, option, name, "--device", "cpu", needles=[option, name, accepted])


def test_csv_and_jsonl_in_capitals_are_written_as_named(tmp_path):
    write_rows(tmp_path / "a.JSONL", [{"x": 1.5}])
    assert (tmp_path / "a.JSONL").read_text() == '{"x": 1.5}\n'


# ================================================================ kind 2: one writer per run directory

def hold(folder):
    folder.mkdir(parents=True, exist_ok=True)
    return hold_lock(folder / LOCK_NAME, owner="pid 4242, `dsmctl train other.yaml`, since 2026-01-01 00:00:00")


@pytest.mark.parametrize("case", ["fresh", "resume", "resume-never"])
def test_train_into_a_run_directory_another_process_writes_is_refused(case, box, run, data):
    target = box.path / "run"
    if case != "fresh":
        copy(run, target)
    lock = hold(target)
    try:
        more = {"fresh": [], "resume": ["--resume", "auto"], "resume-never": ["--resume", "never"]}[case]
        box.bad(*train_args(data, target, *more), needles=[str(target), "another dsmctl process", "pid 4242",
                                                          "other.yaml"])
    finally:
        lock.release()


def test_sample_and_generalize_into_a_locked_directory_are_refused(box, model, data):
    out = box.path / "out"
    lock = hold(out)
    try:
        box.bad("sample", model, "--n", "2", "--steps", "2", "--out", out, "-q", needles=["another", "pid 4242"])
        box.bad("sample", model, "--out", out, "--merge", needles=["another", "pid 4242"])
        box.bad("sample", model, "--n", "2", "--steps", "2", "--shard", "1/2", "--out", out, "-q",
                needles=["another", "pid 4242"])
        box.bad("generalize", RECIPE, "--n", "2", "--out", out, "--set", f"data.source={data}", "--steps", "2",
                needles=["--out", "another", "pid 4242"])
    finally:
        lock.release()


def test_a_second_writer_process_is_refused_and_a_killed_one_frees_the_directory(box, data):
    """A real second process holds the lock; the refusal names its pid; kill -9 frees the directory."""
    target = box.path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from dsmctl.outputs import DirLock; "
                               f"lock = DirLock({str(target)!r}).acquire(); print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=box.env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        box.bad(*train_args(data, target), needles=[f"pid {holder.pid}", "another dsmctl process"], sub=True)
    finally:
        holder.kill()
        holder.wait()
    assert holder.returncode == -9
    r = box.sub(*train_args(data, target))
    assert r.code == 0, r.err
    assert (target / "model.safetensors").is_file() and not (target / LOCK_NAME).exists()


# ================================================================ kinds 5 and 6: checked before the work, said plainly

@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command gets as far as loading a model or starting generalize's protocol."""
    import dsmctl.analysis.generalization as generalization
    import dsmctl.nn.model_file as model_file

    def worked(*args, **kwargs):
        raise AssertionError("the work started: the options were not checked before it")

    monkeypatch.setattr(model_file, "load_model", worked)
    monkeypatch.setattr(generalization, "run", worked)
    monkeypatch.setattr(generalization, "run_pair", worked)


@pytest.mark.parametrize("args,needles", [
    (["--plot", "fig.xyz"], ["--plot", ".png"]),
    (["--plot", "fig"], ["--plot", ".png"]),
    (["--out", "rows.parquet"], ["--out", ".csv"]),
    (["--out", "no/such/rows.csv"], ["--out", "does not exist"]),
    (["--images", "0,20,30", "--n-images", "16", "--plot", "f.png"], ["--images", "20, 30"]),
    (["--images", "3"], ["--images", "--plot"]),
    (["--out", "same.csv", "--plot", "same.csv"], ["--plot"]),
])
def test_dimension_refuses_bad_outputs_before_any_work(args, needles, box, model, no_work):
    box.bad("dimension", model, *args, "--device", "cpu", needles=needles)


@pytest.mark.parametrize("split", ["random:x", "random:", "random:-1", "bogus", "first"])
def test_generalize_split_is_checked_before_training_naming_split(split, box, data, no_work):
    out = box.path / "gen"
    box.bad("generalize", RECIPE, "--n", "2", "--split", split, "--out", out, "--set", f"data.source={data}",
            "--steps", "2", needles=["--split", split])
    assert not out.exists()


@pytest.mark.parametrize("args,needles", [
    (["--n", "2", "--n-eval", "0"], ["--n-eval 0", ">= 1"]),
    (["--n", "2,2"], ["--n", "2 given twice"]),
    (["--n", "2,3,3,2"], ["2, 3 given twice"]),
])
def test_generalize_refuses_what_it_used_to_reinterpret(args, needles, box, data, no_work):
    out = box.path / "gen"
    box.bad("generalize", RECIPE, *args, "--out", out, "--set", f"data.source={data}", "--steps", "2",
            needles=needles)
    assert not out.exists()


def test_generalize_leaves_no_empty_out_when_refused_after_locking(box, data):
    out = box.path / "gen"
    box.bad("generalize", RECIPE, "--n", "100000", "--out", out, "--set", f"data.source={data}", "--steps", "2",
            needles=["--n 100000"])
    assert not out.exists()
