"""Great-circle geometry for the gps generator: a route is a pure function of distance.

A device's position is computed from the distance travelled (speed * time),
never integrated step by step, so it does not drift with the sampling interval
and any device can be asked where it is at any time.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial bearing in degrees [0, 360) from the first point towards the second."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    x = math.sin(dl) * math.cos(p2)
    y = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return _wrap360(math.degrees(math.atan2(x, y)))


def _wrap360(deg: float) -> float:
    # -1e-300 % 360.0 is 360.0 in floating point; headings live in [0, 360)
    h = deg % 360.0
    return 0.0 if h >= 360.0 else h


def intermediate(
    lat1: float, lon1: float, lat2: float, lon2: float, fraction: float, dist_km: float
) -> tuple[float, float]:
    """The point ``fraction`` of the way along the great circle between two points."""
    if dist_km <= 0 or fraction <= 0:
        return lat1, lon1
    if fraction >= 1:
        return lat2, lon2
    d = dist_km / EARTH_RADIUS_KM
    sd = math.sin(d)
    if sd < 1e-12:  # (nearly) coincident or antipodal: fall back to linear
        return lat1 + (lat2 - lat1) * fraction, lon1 + (lon2 - lon1) * fraction
    a = math.sin((1 - fraction) * d) / sd
    b = math.sin(fraction * d) / sd
    p1, l1, p2, l2 = (math.radians(v) for v in (lat1, lon1, lat2, lon2))
    x = a * math.cos(p1) * math.cos(l1) + b * math.cos(p2) * math.cos(l2)
    y = a * math.cos(p1) * math.sin(l1) + b * math.cos(p2) * math.sin(l2)
    z = a * math.sin(p1) + b * math.sin(p2)
    lat = math.degrees(math.atan2(z, math.hypot(x, y)))
    lon = math.degrees(math.atan2(y, x))
    return lat, lon


class Route:
    """Waypoints with cumulative distances; shared (immutable) by the devices of a lot."""

    __slots__ = ("cumulative", "legs", "length_km", "loop", "points")

    def __init__(self, waypoints: Sequence[tuple[float, float]], loop: bool) -> None:
        pts = [(float(a), float(b)) for a, b in waypoints]
        if loop and pts[0] != pts[-1]:
            pts.append(pts[0])  # a loop drives back to the start
        self.points = tuple(pts)
        self.loop = loop
        legs = [haversine_km(*pts[i], *pts[i + 1]) for i in range(len(pts) - 1)]
        self.legs = tuple(legs)
        cum = [0.0]
        for leg in legs:
            cum.append(cum[-1] + leg)
        self.cumulative = tuple(cum)
        self.length_km = cum[-1]

    def at_distance(self, travelled_km: float) -> tuple[float, float, float]:
        """(lat, lon, heading) after travelling this far from the first waypoint.

        Looping routes wrap around; open routes bounce back along the same path.
        """
        total = self.length_km
        if total <= 0:
            lat, lon = self.points[0]
            return lat, lon, 0.0
        d = max(0.0, travelled_km)
        backwards = False
        if self.loop:
            d %= total
        else:
            d %= 2 * total
            if d > total:
                d = 2 * total - d
                backwards = True
        i = min(bisect_right(self.cumulative, d) - 1, len(self.legs) - 1)
        leg = self.legs[i]
        (lat1, lon1), (lat2, lon2) = self.points[i], self.points[i + 1]
        fraction = (d - self.cumulative[i]) / leg if leg > 0 else 1.0
        lat, lon = intermediate(lat1, lon1, lat2, lon2, fraction, leg)
        if backwards:
            lat1, lon1, lat2, lon2 = lat2, lon2, lat1, lon1
            fraction = 1 - fraction
        if fraction < 1 - 1e-9 and leg > 0:
            heading = bearing_deg(lat, lon, lat2, lon2)
        else:  # at the end of the leg: keep the direction of arrival
            heading = _wrap360(bearing_deg(lat2, lon2, lat1, lon1) + 180.0)
        return lat, lon, heading
