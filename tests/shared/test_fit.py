"""Making what a function emits fit what the next accepts (shared/fit.py)."""

from __future__ import annotations

from dev.support.factory import promotion_run
from shared import fit


def test_an_object_that_fits_loses_only_its_bloat() -> None:
    run = promotion_run()
    run["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    run["metadata"]["annotations"] = {fit.LAST_APPLIED: "{...}", "team": "release"}
    out, note = fit.fit_object(run, fit.ENRICHED_BYTES)
    assert note == ""
    assert "managedFields" not in out["metadata"]
    assert out["metadata"]["annotations"] == {"team": "release"}
    assert out["status"] == run["status"]


def test_long_strings_are_cut_first_and_say_so() -> None:
    run = promotion_run()
    run["metadata"]["annotations"] = {"notes": "n" * 900_000}
    out, note = fit.fit_object(run, 100_000)
    assert note == "strings-16384"
    assert out["metadata"]["annotations"]["notes"] == "n" * 16_384 + fit.TRIM_MARK
    assert out["status"] == run["status"], "what filters read is kept"
    assert fit.size_of(out) <= 100_000


def test_an_object_that_cannot_be_cut_down_keeps_its_identity() -> None:
    run = promotion_run(approvers=tuple(f"user-{i}" for i in range(40_000)))
    out, note = fit.fit_object(run, 100_000)
    assert note == "identity"
    assert out == {"apiVersion": run["apiVersion"], "kind": run["kind"], "metadata": {
        k: run["metadata"][k] for k in ("name", "namespace", "uid", "labels")}}


def test_recipients_are_split_into_parts_under_the_room_in_their_order() -> None:
    recipients = [{"subscription": f"s{i:04}", "subscriber": {"name": f"u{i}", "info": {
        "note": "x" * (i % 300)}}} for i in range(2_000)]
    parts = fit.recipient_parts(recipients, 20_000)
    assert len(parts) > 1
    assert [r for part in parts for r in part] == recipients, "every one, once, in order"
    assert all(fit.size_of(part) <= 20_000 for part in parts)
    assert parts == fit.recipient_parts(list(recipients), 20_000), "deterministic"
    assert fit.recipient_parts([], 20_000) == [[]]
    (alone,) = fit.recipient_parts(recipients[:1], 10)
    assert alone == recipients[:1], "a recipient heavier than the room is a part of its own"


def test_notes_name_only_what_was_trimmed() -> None:
    assert fit.noted("", "object", "") == ""
    assert fit.noted("", "object", "identity") == "object:identity"
    assert fit.noted("event:strings-256", "object", "strings-1024") == \
        "event:strings-256,object:strings-1024"
    run = promotion_run()
    run["metadata"]["annotations"] = {fit.LAST_APPLIED: "x" * 900_000}
    _, obj, note = fit.fit_enriched({"reason": "Failed"}, run)
    assert note == "" and fit.LAST_APPLIED not in obj["metadata"]["annotations"], \
        "dropping the bloat is not a trim worth saying"
