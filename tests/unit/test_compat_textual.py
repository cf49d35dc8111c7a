"""The one reach into Textual (veylor.runtime.compat: the TUI's driver puts its own
writer in place of Textual's). These fail when a Textual release moves what the reach
relies on, before a terminal that stops reading can block the relay again."""

from __future__ import annotations

import inspect
import sys

from textual.app import App
from textual.drivers.linux_driver import LinuxDriver

from veylor.runtime import compat
from veylor.tui.terminal import Driver, Writer


def test_the_linux_driver_writes_the_screen_through_the_writer_compat_replaces():
    assert "_writer_thread" in inspect.getsource(LinuxDriver.write)
    assert "_writer_thread" in inspect.getsource(LinuxDriver.start_application_mode)
    assert "_writer_thread" in inspect.getsource(LinuxDriver.close)


async def test_a_driver_has_its_writer_and_file_where_compat_looks():
    driver = Driver(App(), debug=False, mouse=False, size=(80, 24))
    assert "_writer_thread" in vars(driver) and compat.terminal_writer(driver) is None
    assert compat.terminal_file(driver) is sys.__stderr__
    assert driver.veylor_app is not None


async def test_set_terminal_writer_is_what_the_driver_writes_through(tmp_path):
    driver = Driver(App(), debug=False, mouse=False, size=(80, 24))
    with open(tmp_path / "screen", "w") as file:
        writer = Writer(file, on_gone=lambda: None, on_caught_up=lambda: None)
        compat.set_terminal_writer(driver, writer)
        writer.start()
        driver.write("frame")
        writer.stop()
    assert (tmp_path / "screen").read_text() == "frame"
    assert compat.terminal_writer(driver) is writer
