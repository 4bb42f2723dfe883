"""Keeping kernel counters monotonic across a wrap-around, as psutil's nowrap does.

Some /proc counters are 32 bits wide on some kernels and drivers and wrap to 0.
A value lower than the previous reading is taken as a wrap: the previous reading
is added to this and every later value of that field, so the series keeps rising
and rate() sees no reset. This is psutil's `nowrap=True` rule, applied to the raw
readings netdev and diskstats get from psutil with nowrap=False: psutil keeps its
nowrap state once per process, keyed by function name, so readings of two roots
(the real /proc and a fixture tree, or two collectors) would mix into one history.
Here the state belongs to one collector.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["WrapGuard"]


class WrapGuard:
    def __init__(self) -> None:
        self._last: dict[str, tuple[int, ...]] = {}
        self._offset: dict[tuple[str, int], int] = {}

    def adjust(self, readings: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        """`readings` (device -> raw counters) with the wraps seen so far added back.

        A device that disappears loses its offsets: when it comes back (a replugged
        disk, a recreated interface) it starts from its raw values again.
        """
        for gone in self._last.keys() - readings.keys():
            for index in range(len(self._last[gone])):
                self._offset.pop((gone, index), None)
        adjusted: dict[str, tuple[int, ...]] = {}
        for device, values in readings.items():
            last = self._last.get(device)
            if last is None:
                adjusted[device] = tuple(values)
                continue
            out = []
            for index, value in enumerate(values):
                key = (device, index)
                if index < len(last) and value < last[index]:
                    self._offset[key] = self._offset.get(key, 0) + last[index]
                out.append(value + self._offset.get(key, 0))
            adjusted[device] = tuple(out)
        self._last = {device: tuple(values) for device, values in readings.items()}
        return adjusted
