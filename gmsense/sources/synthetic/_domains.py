"""Domains of the synthetic world: which biome, sensor, cloud regime and season a scene is drawn in.

A :class:`Domain` is a frozen set of parameters chosen by name. The named domains of
:data:`DOMAINS` are biomes (:mod:`gmsense.sources.synthetic._biomes`): ``classic`` is the world the
synthetic source always drew (identical scenes for the same site and seed; it keeps its size
parameters in pixels, so at 20 or 30 m it is today's world at that pixel size), the others are
distinct worlds (land-cover mix, phenology, fields, water, terrain, event kinds and sizes, licence
sizes and places). Each combines with imaging modifiers joined by ``+``:

- sensor: ``s2`` (default: the six bands), ``s2_no_swir`` (blue, green, red, nir only) or
  ``landsat`` (30 m, six bands with Landsat-like band response, noise and revisit);
- resolution: ``10m``, ``20m`` or ``30m`` (default: the settings' ``synthetic.resolution_m``;
  ``landsat`` is 30 m); covers and events are rasterised at 2 m and averaged, so narrow works are
  sub-pixel;
- clouds: ``clear``, ``normal`` (default) or ``cloudy`` (share of cloudy dates, cloud size, haze);
- season: ``shift+N`` / ``shift-N``: green-up, senescence, sowing, harvest and snow shifted by N
  days (at most 21);
- land cover: ``coverN`` (N a positive integer): the biome's land cover and phenology redrawn,
  deterministically from N, across broad physical ranges (:func:`covered_biome`: how much of it
  is grass, how green grass and forest get, how evergreen the forest is, shrubs, green-up and
  senescence, drought strength, relief, works on fields where there are fields). The biome's
  events, sizes and licences stay. Domain randomisation draws it for half the training worlds, so
  works are seen on every kind of cover, not only on the cover their biome is named for; a
  held-out biome is still never seen under its own name;
- hemisphere: ``south``: the world on the southern calendar. It is drawn as in the north and every
  date (acquisitions, events, first observations) is :data:`HALF_YEAR` later, so green-up comes in
  October-November, the growing season runs across New Year (a season is named by the year it ends
  in) and the scene covers the same number of seasons, half a year later. A southern scene is
  scanned with the growing-season months shifted by six months too (:func:`scan_settings`). The
  sun over terrain keeps the northern geometry.

For example ``boreal_forest+landsat+cloudy`` or ``cropland_plain+20m+s2_no_swir+shift-14+cover31``. The
canonical name (:attr:`Domain.name`, modifiers in this order, defaults left out) is what a cube's
``attrs["domain"]`` and the truth's ``domain`` column record.

"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gmsense.sources.synthetic._biomes import BIOMES, Biome

MAX_SEASON_SHIFT_DAYS = 21
HALF_YEAR_DAYS = 184  # a southern world's dates are this much later: 1 May -> 1 November
HEMISPHERES = ("north", "south")
RESOLUTIONS_M = (10.0, 20.0, 30.0)


@dataclass(frozen=True)
class Sensor:
    """The imaging system: bands kept, pixel size, band response, noise, geometry and revisit.

    ``response`` maps each of the six bands ``slope * reflectance + offset`` (applied to the ground
    reflectance before the atmosphere); ``noise_sd`` / ``noise_rel`` are the absolute and relative
    noise (reflectance units); ``misregistration_px`` the range of per-date shifts; ``revisit_days``
    the range (``integers(lo, hi)``, hi exclusive) of days between acquisitions; ``overpass_hour`` the
    local solar time of the overpass (sun position over terrain).
    """

    name: str
    platform: str
    bands: tuple[str, ...] = ("blue", "green", "red", "nir", "swir1", "swir2")
    resolution_m: float | None = None  # None: the settings' synthetic.resolution_m
    response: tuple[tuple[float, float], ...] | None = None  # (slope, offset) per band; None: identity
    noise_sd: float = 0.003
    noise_rel: float = 0.01
    misregistration_px: tuple[float, float] = (0.3, 0.6)
    revisit_days: tuple[int, int] = (5, 16)
    overpass_hour: float = 10.5


@dataclass(frozen=True)
class Clouds:
    """A cloud regime: share of cloudy dates, overcast share, cloud-field threshold (lower: more
    cover) and smoothing (pixels at 10 m: larger clouds), haze (gamma scale of the haze depth)."""

    name: str
    date_prob: float = 0.45
    overcast_prob: float = 0.08
    threshold: tuple[float, float] = (0.6, 2.2)
    overcast_threshold: tuple[float, float] = (-1.0, 0.0)
    scale_px: tuple[float, float] = (3.0, 10.0)
    haze_scale: float = 0.15


SENSORS: dict[str, Sensor] = {
    "s2": Sensor("s2", "sentinel-2-like"),
    "s2_no_swir": Sensor("s2_no_swir", "sentinel-2-like", bands=("blue", "green", "red", "nir")),
    # Landsat 8/9 OLI: 30 m, 8-16 day revisit (two satellites), registration within ~12 m; band
    # response from the HLS bandpass adjustment of MSI to OLI (Claverie et al. 2018).
    "landsat": Sensor("landsat", "landsat-like", resolution_m=30.0,
                      response=((0.9778, -0.004), (1.0053, -0.0009), (0.9765, 0.0009), (0.9983, -0.0001),
                                (0.9987, -0.0011), (1.003, -0.0012)),
                      noise_sd=0.004, noise_rel=0.012, misregistration_px=(0.15, 0.4), revisit_days=(8, 17),
                      overpass_hour=10.2),
}

CLOUD_REGIMES: dict[str, Clouds] = {
    "clear": Clouds("clear", date_prob=0.2, overcast_prob=0.02, threshold=(1.0, 2.4), scale_px=(3.0, 8.0),
                    haze_scale=0.08),
    "normal": Clouds("normal"),
    "cloudy": Clouds("cloudy", date_prob=0.7, overcast_prob=0.2, threshold=(0.0, 1.6), scale_px=(5.0, 14.0),
                     haze_scale=0.25),
}


@dataclass(frozen=True)
class Domain:
    """A synthetic world: a biome seen by a sensor under a cloud regime, with a season shift.

    ``resolution_m`` None takes the sensor's, else the settings' pixel size."""

    biome: Biome
    sensor: Sensor = SENSORS["s2"]
    clouds: Clouds = CLOUD_REGIMES["normal"]
    resolution_m: float | None = None
    season_shift_days: float = 0.0
    hemisphere: str = "north"
    cover_draw: int = 0  # 0: the biome's own land cover; else covered_biome(biome, cover_draw)

    @property
    def name(self) -> str:
        """The canonical name: the biome, then the modifiers that differ from the defaults."""
        parts = [self.biome.name]
        if self.sensor.name != "s2":
            parts.append(self.sensor.name)
        if self.resolution_m is not None and self.resolution_m != self.sensor.resolution_m:
            parts.append(f"{self.resolution_m:g}m")
        if self.clouds.name != "normal":
            parts.append(self.clouds.name)
        if self.season_shift_days:
            parts.append(f"shift{self.season_shift_days:+g}")
        if self.cover_draw:
            parts.append(f"cover{self.cover_draw}")
        if self.hemisphere != "north":
            parts.append(self.hemisphere)
        return "+".join(parts)

    @property
    def is_classic(self) -> bool:
        """The world the synthetic source always drew (identical scenes)."""
        return self.name == "classic"

    def resolution(self, settings_resolution_m: float) -> float:
        """Pixel size in metres: this domain's, else its sensor's, else the settings'."""
        return float(self.resolution_m or self.sensor.resolution_m or settings_resolution_m)


#: The named domains: every biome with the default sensor (s2), clouds (normal) and season.
DOMAINS: dict[str, Domain] = {name: Domain(biome) for name, biome in BIOMES.items()}
#: The modifiers :func:`domain_named` accepts after the biome (besides ``shift+N`` / ``shift-N``).
#: The worlds models are trained and validated across (leave one out): every biome, each seen
#: through another sensor, pixel size or sky, so a held-out world differs in more than one way.
VALIDATION_DOMAINS = ("classic", "boreal_forest+20m", "steppe_grassland+landsat", "cropland_plain+s2_no_swir",
                      "wetland+cloudy", "mountain_forest+30m")
MODIFIERS = (*SENSORS, *(f"{r:g}m" for r in RESOLUTIONS_M), *CLOUD_REGIMES, "south", "coverN")

#: Domain randomisation (``gmsense train --domains randomised``): the chances a training world is
#: drawn with each sensor, pixel size (for the Sentinel-2-like sensors; Landsat is 30 m), cloud regime,
#: a season shift (uniform up to :data:`MAX_SEASON_SHIFT_DAYS` either way) and the southern calendar.
#: Coarse pixels are drawn as often as fine ones: the largest worlds (boreal, steppe, mountain licences
#: of up to 6 km2) cost 9x more to draw and analyse at 10 m than at 30 m.
RANDOM_SENSOR_P = {"s2": 0.45, "s2_no_swir": 0.25, "landsat": 0.30}
RANDOM_RESOLUTION_P = {10.0: 0.4, 20.0: 0.35, 30.0: 0.25}
RANDOM_CLOUDS_P = {"clear": 0.25, "normal": 0.5, "cloudy": 0.25}
RANDOM_SHIFT_P = 0.5
RANDOM_SOUTH_P = 0.15
RANDOM_COVER_P = 0.5  # the chance a training world's land cover is redrawn (``coverN``)
MAX_COVER_DRAW = 999_999

#: The ranges ``coverN`` draws from (uniform): broad, physical, shared by every biome. Peak green
#: shares span sparse dry grass to dense crops and canopies; ``grass_threshold`` spans grass
#: everywhere to forest everywhere (:mod:`gmsense.sources.synthetic._world`); days of year.
COVER_RANGES = {"grass_threshold": (-1.6, 2.0), "grass_vigour": (0.4, 0.85), "forest_vigour": (0.6, 0.92),
                "forest_evergreen": (0.2, 0.8), "shrub_share": (0.0, 0.3), "greenup_doy": (122.0, 145.0),
                "senescence_doy": (245.0, 272.0), "drought_scale": (0.5, 1.5)}
COVER_RELIEF_P, COVER_RELIEF_M = 0.3, (200.0, 800.0)  # the chance of terrain, and its relief
COVER_WORKS_ON_FIELDS_P = 0.5


def covered_biome(biome: Biome, draw: int) -> Biome:
    """``biome`` with its land cover and phenology redrawn from :data:`COVER_RANGES` (deterministic
    from ``draw``); its name, events, sizes and licences unchanged. The classic world keeps its
    own cover (it is drawn by the original code, identical scenes)."""
    import numpy as np

    if biome.legacy or not draw:
        return biome
    rng = np.random.default_rng([draw, 7919])
    value = {k: float(rng.uniform(*r)) for k, r in COVER_RANGES.items()}
    relief = float(rng.uniform(*COVER_RELIEF_M)) if rng.random() < COVER_RELIEF_P else 0.0
    on_fields = bool(biome.field_layout != "none" and rng.random() < COVER_WORKS_ON_FIELDS_P)
    drought = tuple((cover, change * value["drought_scale"]) for cover, change in biome.drought_vigour)
    return replace(biome, grass_threshold=value["grass_threshold"], grass_vigour=value["grass_vigour"],
                   forest_vigour=value["forest_vigour"], forest_evergreen=value["forest_evergreen"],
                   shrub_share=value["shrub_share"], greenup_doy=value["greenup_doy"],
                   senescence_doy=value["senescence_doy"], drought_vigour=drought, relief_m=relief,
                   works_on_fields=on_fields or biome.works_on_fields,
                   field_edge_p=biome.field_edge_p or (0.3 if on_fields else 0.0))


def biome_of(name: str) -> str:
    """The biome part of a domain name (``steppe_grassland+landsat`` -> ``steppe_grassland``): the unit
    leave-one-world-out validation holds out, so a held-out world's land cover is never seen in training
    under any sensor, pixel size or sky."""
    return str(name).split("+", 1)[0].strip()


def randomised_domain(biome: str, seed: int, draw: int = 0) -> Domain:
    """A world of ``biome`` with a sensor, pixel size, cloud regime, season shift, hemisphere and (for
    half) a redrawn land cover (``coverN``) drawn at random (:data:`RANDOM_SENSOR_P` ...),
    deterministic from ``(biome, seed, draw)``: domain randomisation for training, so a model meets
    every biome through several sensors and skies, and works on every kind of cover."""
    import zlib

    import numpy as np

    if biome not in DOMAINS:
        raise ValueError(f"unknown biome {biome!r}; known: {', '.join(DOMAINS)}")
    rng = np.random.default_rng([seed, draw, zlib.crc32(biome.encode())])

    def pick(chances: dict) -> object:
        keys = list(chances)
        return keys[rng.choice(len(keys), p=list(chances.values()))]

    sensor = SENSORS[str(pick(RANDOM_SENSOR_P))]
    resolution = float(pick(RANDOM_RESOLUTION_P))  # type: ignore[arg-type]
    clouds = CLOUD_REGIMES[str(pick(RANDOM_CLOUDS_P))]
    shift = float(rng.integers(-MAX_SEASON_SHIFT_DAYS, MAX_SEASON_SHIFT_DAYS + 1)) if rng.random() < RANDOM_SHIFT_P \
        else 0.0
    south = rng.random() < RANDOM_SOUTH_P
    cover = int(rng.integers(1, MAX_COVER_DRAW + 1)) if rng.random() < RANDOM_COVER_P else 0
    if DOMAINS[biome].biome.legacy:
        cover = 0  # the classic world keeps its own cover
    return replace(DOMAINS[biome], biome=covered_biome(DOMAINS[biome].biome, cover), cover_draw=cover,
                   sensor=sensor, clouds=clouds, season_shift_days=shift,
                   resolution_m=None if sensor.resolution_m is not None else resolution,
                   hemisphere="south" if south else "north")


def domain_named(name: str | Domain) -> Domain:
    """The domain of ``name``: a key of :data:`DOMAINS`, optionally followed by ``+`` modifiers
    (see the module docstring). Raises ValueError naming the known domains and modifiers."""
    if isinstance(name, Domain):
        return name
    biome, *mods = [p.strip() for p in str(name).strip().split("+")]
    # "shift+14" splits into "shift" and "14": join them back
    joined: list[str] = []
    for part in mods:
        if joined and joined[-1] == "shift":
            joined[-1] = f"shift+{part}"
        else:
            joined.append(part)
    if biome not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {biome!r}; known: {', '.join(DOMAINS)} "
                         f"(modifiers: {', '.join(MODIFIERS)}, shift+N, shift-N)")
    domain = DOMAINS[biome]
    for part in joined:
        domain = _modify(domain, part, name)
    if domain.sensor.resolution_m is not None and domain.resolution_m not in (None, domain.sensor.resolution_m):
        raise ValueError(f"synthetic domain {name!r}: {domain.sensor.name} images are "
                         f"{domain.sensor.resolution_m:g} m, not {domain.resolution_m:g} m")
    return domain


def _modify(domain: Domain, part: str, name: str) -> Domain:
    if part.startswith("cover") and part[5:].isdigit() and 0 < int(part[5:]) <= MAX_COVER_DRAW:
        if domain.biome.legacy:
            raise ValueError(f"synthetic domain {name!r}: the classic world keeps its own land cover")
        draw = int(part[5:])
        return replace(domain, biome=covered_biome(DOMAINS[domain.biome.name].biome, draw), cover_draw=draw)
    if part == "south":
        return replace(domain, hemisphere="south")
    if part in SENSORS:
        return replace(domain, sensor=SENSORS[part])
    if part in CLOUD_REGIMES:
        return replace(domain, clouds=CLOUD_REGIMES[part])
    if part.endswith("m") and part[:-1].replace(".", "", 1).isdigit() and float(part[:-1]) in RESOLUTIONS_M:
        return replace(domain, resolution_m=float(part[:-1]))
    if part.startswith("shift") and part[5:6] in ("+", "-"):
        try:
            days = float(part[5:])
        except ValueError:
            days = float("nan")
        if not abs(days) <= MAX_SEASON_SHIFT_DAYS:
            raise ValueError(f"synthetic domain {name!r}: a season shift is at most {MAX_SEASON_SHIFT_DAYS} days "
                             f"either way, got {part!r}")
        return replace(domain, season_shift_days=days)
    raise ValueError(f"synthetic domain {name!r}: unknown modifier {part!r}; known: {', '.join(MODIFIERS)}, "
                     "shift+N, shift-N")


def southern_months(start_month: int, end_month: int) -> tuple[int, int]:
    """The growing-season months six months on (May-September -> November-March)."""
    return (start_month + 5) % 12 + 1, (end_month + 5) % 12 + 1
