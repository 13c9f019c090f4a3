import pickle
import zipfile

import pytest
import torch
from torch import nn

from ddpm_studio.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ddpm_studio.core.ema import EMA


def payload(v=1.0):
    return {"config": {"a": 1}, "model": {"w": torch.full((3,), v)}, "step": 7}


def test_round_trip_and_weights_only(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, payload())
    data = load_checkpoint(path)
    assert data["step"] == 7 and data["format_version"] == 1
    torch.testing.assert_close(data["model"]["w"], torch.ones(3))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_interrupted_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, payload(1.0))

    def exploding_save(obj, fh):
        fh.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="Disk full"):
        save_checkpoint(path, payload(2.0))
    monkeypatch.undo()
    torch.testing.assert_close(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # the temp file was cleaned up


def test_killed_mid_write_temp_file_is_ignored(tmp_path):
    """A SIGKILL leaves a stray temp file, never a half-written c.pt."""
    path = tmp_path / "c.pt"
    save_checkpoint(path, payload())
    (tmp_path / ".c.pt.abc.tmp").write_bytes(b"PK\x03\x04garbage")
    assert load_checkpoint(path)["step"] == 7


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"hello, not a checkpoint", "not a readable|truncated|corrupt"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, payload())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_foreign_and_future_files(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a DDPM Studio checkpoint"):
        load_checkpoint(other)
    future = tmp_path / "future.pt"
    torch.save({"format": "ddpm-studio", "format_version": 99, "config": {}, "model": {}, "step": 0}, future)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(future)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


class _WritesFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_crafted_pickle_is_not_executed(tmp_path):
    target = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as zf:  # the layout torch.save uses, with a hostile data.pkl
        zf.writestr("evil/data.pkl", pickle.dumps({"format": "ddpm-studio", "x": _WritesFile(str(target))}, protocol=2))
        zf.writestr("evil/version", "3\n")
        zf.writestr("evil/byteorder", "little")
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    assert not target.exists()


def test_ema_warmup_and_average():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9)
    assert ema.current_decay() == pytest.approx(0.1)  # (1+0)/(10+0)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.model.weight, torch.full((2, 2), 0.9))
    for _ in range(200):
        ema.update(model)
    torch.testing.assert_close(ema.model.weight, torch.ones(2, 2), rtol=1e-4, atol=1e-4)
    assert not any(p.requires_grad for p in ema.model.parameters())
    state = ema.state_dict()
    other = EMA(model, decay=0.9)
    other.load_state_dict(state)
    assert other.num_updates == 201
    torch.testing.assert_close(other.model.weight, ema.model.weight)


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    """Not mkstemp's owner-only 0600: what open() would give (0666 minus the umask)."""
    import os

    from ddpm_studio.core import atomic

    target = tmp_path / "grid.png"
    atomic.atomic_write(target, lambda fh: fh.write(b"x"))
    assert target.read_bytes() == b"x"
    mask = os.umask(0o022)
    os.umask(mask)
    assert mask == atomic._UMASK
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
