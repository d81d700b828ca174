"""Debug crops are personal data: deleted by age, and by plate on request."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from gateway.core.clock import FakeClock
from gateway.core.reads import PlateResult
from gateway.lpr.capture import CaptureStore, expire_captures, purge_captures


def test_crops_expire_by_age_and_are_purged_by_plate(tmp_path: Path) -> None:
    clock = FakeClock()
    store = CaptureStore(tmp_path, max_mb=1, clock=clock)
    store.save(PlateResult(None, 0.3, guess="AB-123", crop_png=b"png"), camera_id="entry")
    clock.advance(3600)
    store.save(PlateResult(None, 0.3, guess="XY999"), camera_id="entry")
    store.save(PlateResult(None, 0.2, guess="ab123"), camera_id="exit")
    assert expire_captures(tmp_path, clock.now() - timedelta(minutes=30)) == 1
    assert len(list(tmp_path.iterdir())) == 2  # the old crop's PNG and sidecar are gone
    assert purge_captures(tmp_path, "AB123") == 1
    assert [p.suffix for p in tmp_path.iterdir()] == [".json"]
    assert b"XY999" in next(tmp_path.iterdir()).read_bytes()


def test_the_store_deletes_expired_crops_before_each_save_and_when_it_starts(
        tmp_path: Path) -> None:
    clock = FakeClock()
    store = CaptureStore(tmp_path, max_mb=1, clock=clock, max_age_h=1)
    store.save(PlateResult(None, 0.3, guess="OLD123", crop_png=b"png"), camera_id="entry")
    clock.advance(2 * 3600)
    store.save(PlateResult(None, 0.3, guess="NEW456"), camera_id="entry")
    assert len(store) == 1
    assert store.deleted == 1
    assert [p.suffix for p in tmp_path.iterdir()] == [".json"]
    assert b"NEW456" in next(tmp_path.iterdir()).read_bytes()
    clock.advance(2 * 3600)
    again = CaptureStore(tmp_path, max_mb=1, clock=clock, max_age_h=1)  # a restart
    assert len(again) == 0
    assert list(tmp_path.iterdir()) == []
