"""The compact, pickle-free state format: round trips, and bad files give one clear error."""

import io

import pytest
import torch

from factorconv.export import compact_size, load_compact, save_compact


def test_round_trip_all_dtypes_and_shapes(tmp_path) -> None:
    state = {
        "w": torch.randn(3, 4), "scalar": torch.tensor(7), "bits": torch.tensor([1, 2, 255], dtype=torch.uint8),
        "flags": torch.tensor([True, False]), "empty": torch.empty(0, 5), "half": torch.randn(2).half(),
    }
    path = tmp_path / "m.fcv"
    n = save_compact(state, path)
    assert n == path.stat().st_size == compact_size(state)
    back = load_compact(path)
    assert back.keys() == state.keys()
    for k, v in state.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v)


def test_bad_files_raise_value_error(tmp_path) -> None:
    buf = io.BytesIO()
    save_compact({"w": torch.randn(100)}, buf)
    data = buf.getvalue()
    for bad, needle in ((b"PK\x03\x04junk", "not a factorconv compact file"), (data[:-10], "truncated"),
                        (data[:8] + b"\x00" * 20 + data[28:], "corrupt header")):
        with pytest.raises(ValueError, match=needle):
            load_compact(io.BytesIO(bad))


def test_the_compact_format_is_public_api(tmp_path) -> None:
    """docs/bdsc.md ships a packed model with fc.save_compact / fc.load_compact."""
    import factorconv as fc

    shipped = fc.pack(fc.create_conv2d(4, 8, 3, conv="bdsc", padding=1).eval())
    assert fc.save_compact(shipped, tmp_path / "model.fcv") == (tmp_path / "model.fcv").stat().st_size
    assert fc.load_compact(tmp_path / "model.fcv").keys() == shipped.state_dict().keys()
