"""Progress of long work goes to pytest's terminal reporter (shown while output is captured); under
CI=true with -q only the top-level lines."""
from __future__ import annotations

import pytest

from bench.plugin import progress_writer


class FakeReporter:
    def __init__(self):
        self.lines: list[str] = []

    def write_line(self, line):
        self.lines.append(line)

    def flush(self):
        pass


class FakeConfig:
    def __init__(self, verbosity: int, reporter):
        self._verbosity, self._reporter = verbosity, reporter
        self.pluginmanager = self

    def get_plugin(self, name):
        assert name == "terminalreporter"
        return self._reporter

    def get_verbosity(self):
        return self._verbosity


LINES = ["building prune-struct-0.5: 50% of channels removed", "  step 40/200 (epoch 0.4/2.0)  loss 1.2  30s, ~120s left",
         "loaded fp32-aotinductor-x86 for 224x224 batch 1 in 16s (compiled or quantized; cached now)"]


@pytest.mark.parametrize("ci, verbosity, shown", [
    ("", 0, LINES), ("", -1, LINES), ("true", 0, LINES),
    ("true", -1, [LINES[0], LINES[2]]),  # CI, -q: one line per build or slow load, no per-step lines
])
def test_progress_lines_reach_the_terminal(monkeypatch, ci, verbosity, shown):
    monkeypatch.setenv("CI", ci)
    tr = FakeReporter()
    write = progress_writer(FakeConfig(verbosity, tr))
    for line in LINES:
        write(line)
    assert tr.lines == shown


def test_without_a_terminal_reporter_progress_is_printed(monkeypatch, capsys):
    monkeypatch.delenv("CI", raising=False)
    progress_writer(FakeConfig(0, None))("building fp32")
    assert capsys.readouterr().out == "building fp32\n"
