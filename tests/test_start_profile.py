"""The start profile of ``bench/start_profile.py`` on hand-written ``perf script`` text."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from start_profile import FORKER, MOCK, activity, breakdown, parse, report

TOWER, FORKING, NEW_MOCK, MOCK_PID = 100, 300, 301, 400


def _sample(comm: str, pid: int, frames: list[str], tid: int | None = None) -> str:
    """One sample as ``perf script -F comm,pid,tid,ip,sym`` prints a -g recording."""
    head = f"{comm:>16} {pid}/{tid or pid} "  # perf may right-align the name
    body = [f"\t{0xFFFFFFFF81000000 + i:16x} {name}" for i, name in enumerate(frames)]
    return "\n".join([head, *body, ""])


PAGE_FAULT = ["do_wp_page", "__handle_mm_fault", "exc_page_fault", "asm_exc_page_fault"]
TEXT = "\n".join(
    [
        _sample("mf-intermediate", FORKING, ["copy_page_range", "dup_mmap", "copy_process"]),
        _sample("mf-intermediate", NEW_MOCK, PAGE_FAULT),
        _sample("mf-mock", MOCK_PID, PAGE_FAULT),
        _sample("mf-mock", MOCK_PID, ["filemap_map_pages", "do_read_fault", "asm_exc_page_fault"]),
        _sample("mf-mock", MOCK_PID, ["_PyEval_EvalFrameDefault", "[unknown]"]),
        _sample(
            "python",
            TOWER,
            ["ext4_search_dir", "__x64_sys_openat", "do_syscall_64"],
            tid=TOWER + 1,  # a thread of the tower's process: counted as the tower
        ),
        _sample("swapper", 0, ["pv_native_safe_halt", "default_idle", "do_idle"]),
        _sample("kdamond.0", 77, ["page_vma_mapped_walk", "kthread", "ret_from_fork"]),
    ]
)


def test_samples_are_sorted_by_role_and_activity() -> None:
    samples = parse(TEXT.splitlines())
    assert len(samples) == 8
    b = breakdown(samples, {TOWER: "tower"})
    # the process that forked is a forker; the one still named after it is a new mock
    assert b.by_role == {
        MOCK: 4,
        FORKER: 1,
        "tower": 1,
        "idle": 1,
        "kernel memory threads": 1,
    }
    assert b.by_activity[MOCK] == {
        "page fault: copy-on-write": 2,
        "page fault: file": 1,
        "own code": 1,
    }
    assert b.by_activity[FORKER] == {"fork": 1}
    assert b.by_activity["tower"] == {"syscall: openat": 1}


def test_activities() -> None:
    assert activity(["do_exit", "x"]) == "exit"
    assert activity(["do_anonymous_page", "asm_exc_page_fault"]) == "page fault: fresh page"
    assert activity(["do_syscall_64"]) == "syscall: other"
    assert activity([]) == "own code"


def test_report_gives_shares_and_cost_per_start() -> None:
    b = breakdown(parse(TEXT.splitlines()), {TOWER: "tower"})
    # 8 samples at 4 Hz on 1 CPU over 2 s: every sample is 1/8 of the machine
    lines = report(b, starts=2, seconds=2.0, cpus=1, freq=4)
    assert lines[0].startswith("start profile: 2 starts in 2.00 s on 1 CPUs, 8 samples")
    mocks = next(line for line in lines if f" {MOCK} " in line)
    # 4 of 8 samples, 4 samples at 4 Hz = 1 s of CPU for 2 starts = 500 ms each
    assert "50.0%" in mocks and "500.00 ms" in mocks
    assert "page fault: copy-on-write 25.0%" in mocks
    assert lines[-1] == (
        "start profile: page faults, all roles: 37.5% of all CPUs; fork and exit: 12.5%"
    )
    assert report(breakdown([], {}), 1, 1.0, 1) == ["start profile: no samples were recorded"]


def test_a_clone_still_named_after_the_zygote_is_a_new_mock() -> None:
    """The zygote clones each mock as the tower's child: until the mock names
    itself it is "mf-zygote" under a PID of its own; the zygote's own
    samples (its fork included) stay the zygote's."""
    zygote, clone = 200, 201
    text = "\n".join(
        [
            _sample("mf-zygote", zygote, ["copy_page_range", "dup_mmap", "copy_process"]),
            _sample("mf-zygote", clone, PAGE_FAULT),
        ]
    )
    b = breakdown(parse(text.splitlines()), {zygote: "zygote"})
    assert b.by_role == {"zygote": 1, MOCK: 1}
    assert b.by_activity[MOCK] == {"page fault: copy-on-write": 1}
