"""Earth Engine computation graphs for the ``earthengine`` source (private).

Everything here builds ``ee`` objects client-side; nothing talks to the server. Two graphs per
licence:

* :func:`listing_graph` - one ``computeValue`` that lists, for every image of the collection
  touching the licence's grid rectangle within the date range, ``[system:id, system:time_start
  (ms since 1970, UTC), clear share of the rectangle]``;
* :func:`image_graph` - the pixels of one image as the cube wants them: float32 surface
  reflectance under the common band names (``blue .. swir2``) and a uint8 ``qa`` band
  (:data:`QA_NO_DATA` / :data:`QA_CLOUDY` / :data:`QA_CLEAR`), fetched by ``computePixels``.

Collections and masks:

* Sentinel-2 ``COPERNICUS/S2_SR_HARMONIZED``, reflectance = DN x 1e-4 (the harmonized collection
  already removed the +1000 offset of processing baseline 04.00), clear = Cloud Score+
  ``cs_cdf >= threshold`` (``GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED`` linked by
  ``system:index``) and scene class not saturated/defective (SCL 1) nor snow (SCL 11). An image whose
  Cloud Score+ is not published yet has ``cs_cdf`` masked, so it is never clear (and, with its
  clear share 0, it is not fetched until it is).
* Landsat 8/9 Collection 2 Level 2 ``LANDSAT/LC0{8,9}/C02/T1_L2``, reflectance = ``SR_B*`` x
  0.0000275 - 0.2 (USGS scale factors), clear = ``QA_PIXEL`` fill, dilated cloud, cirrus, cloud,
  cloud shadow (bits 0-4) and snow (bit 5) unset and ``QA_RADSAT == 0`` (no saturated band), the
  same bits the local source reads (:data:`gmsense.sources._bands.QA_NOT_CLEAR_BITS`).
* ``landsat-archive``: Landsat 5 TM ``LANDSAT/LT05/C02/T1_L2`` and Landsat 7 ETM+
  ``LANDSAT/LE07/C02/T1_L2`` merged with Landsat 8/9, each renamed to the common names from its own
  band numbering (TM/ETM+ ``SR_B1, B2, B3, B4, B5, B7``; OLI ``SR_B2 .. SR_B7``), same scale factors
  and QA_PIXEL bits (bit 2, cirrus, is unused and 0 for TM/ETM+). ETM+ scan-line-corrector gaps
  (SLC-off, after 2003-05-31) are fill: masked, so ``qa`` 0 (not observed). The graphs fetch each
  sensor's reflectance as it is; the cross-sensor harmonisation of TM / ETM+ to OLI is applied to
  the cube, client-side (:mod:`gmsense.cube.harmonise`).

Every collection's request grid is anchored on its native lattice (:attr:`CollectionSpec.grid_origin_m`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ee

from gmsense.sources._bands import QA_NOT_CLEAR_BITS
from gmsense.sources.earthengine._fetch import request_bytes_per_pixel

S2_COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
CLOUD_SCORE_PLUS = "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"
LANDSAT_COLLECTIONS = ("LANDSAT/LC08/C02/T1_L2", "LANDSAT/LC09/C02/T1_L2")
#: Landsat 5 TM and Landsat 7 ETM+ Collection 2 Level-2, Tier 1 (USGS LSDS-1618, Landsat 4-7 C2 L2 Science
#: Product Guide; Earth Engine catalogue ``LANDSAT_LT05_C02_T1_L2`` / ``LANDSAT_LE07_C02_T1_L2``).
LT05_COLLECTION = "LANDSAT/LT05/C02/T1_L2"
LE07_COLLECTION = "LANDSAT/LE07/C02/T1_L2"
#: The archive: TM, ETM+, then OLI (``earthengine.collection: landsat-archive``).
LANDSAT_ARCHIVE_COLLECTIONS = (LT05_COLLECTION, LE07_COLLECTION, *LANDSAT_COLLECTIONS)

#: The cube's reflectance bands, in order; every collection's own band names are renamed to these.
COMMON_BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")
#: Source bands for :data:`COMMON_BANDS`. Sentinel-2 MSI (ESA S2 L2A product specification);
#: Landsat 8/9 OLI SR_B2..SR_B7 (SR_B1 is coastal aerosol; USGS LSDS-1619); Landsat 4-7 TM/ETM+
#: SR_B1..SR_B5 and SR_B7 (band 6 is thermal; USGS LSDS-1618).
S2_BANDS = ("B2", "B3", "B4", "B8", "B11", "B12")
OLI_BANDS = ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7")
TM_ETM_BANDS = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7")
#: Bands the clear mask reads, kept under their own names.
S2_QUALITY_BANDS = ("SCL",)
LANDSAT_QUALITY_BANDS = ("QA_PIXEL", "QA_RADSAT")

#: Sentinel-2 scene classification (SCL) classes that are never clear: 1 saturated or defective, 11 snow.
S2_SCL_NOT_CLEAR = (1, 11)
#: Values of the ``qa`` band: every pixel of the requested grid says explicitly whether it was
#: observed and clear (the qa band is unmasked over the whole grid, ``sameFootprint`` false), so
#: nothing rests on what computePixels returns for masked pixels.
QA_NO_DATA, QA_CLOUDY, QA_CLEAR = 0, 1, 2
QA_BAND = "qa"
#: ``ee.Image.unmask(value, sameFootprint)``: with ``sameFootprint`` true (its default) the output keeps
#: the input's footprint, so pixels of the grid outside the image stay masked and drop out of a
#: reduceRegion mean; false extends the output over the value image's footprint (a constant: everywhere).
#: https://developers.google.com/earth-engine/apidocs/ee-image-unmask
SAME_FOOTPRINT = False
#: Bytes per value of the reflectance bands (float32) and of the qa band (uint8) as :func:`image_graph` makes them.
REFLECTANCE_BYTES, QA_BYTES = 4, 1
#: Scale of the clear-share reduction in the listing, metres: coarse on purpose (cheap), the share
#: only decides which images are worth fetching.
LISTING_SCALE_M = 60.0
#: Where the native lattices put pixel edges, metres from the CRS origin (modulo the pixel size).
#: Sentinel-2 L2A tiles: edges on multiples of 10/20/60 m (ESA S2 MSI product specification, tile
#: ULX/ULY on whole multiples of 60 m in UTM). Landsat Collection 2: pixel centres on multiples of
#: 30 m, so edges at odd multiples of 15 m (USGS products' corner coordinates, e.g. an upper-left
#: edge at x = 399885 m = 13329.5 x 30 m).
S2_GRID_ORIGIN_M = 0.0
LANDSAT_GRID_ORIGIN_M = 15.0


@dataclass(frozen=True)
class CollectionSpec:
    """One supported collection: the collections merged (each with its own band names for
    :data:`COMMON_BANDS`), the bands its clear mask reads, scale factors and the native lattice."""

    key: str
    platform: str
    sources: tuple[tuple[str, tuple[str, ...]], ...]
    quality_bands: tuple[str, ...]
    scale: float
    offset: float
    resolution_m: float
    grid_origin_m: float
    first_date: str

    @property
    def collections(self) -> tuple[str, ...]:
        return tuple(cid for cid, _ in self.sources)

    @property
    def common_names(self) -> list[str]:
        return list(COMMON_BANDS)

    def source_names(self, image_id: str) -> tuple[str, ...]:
        """The band names of the collection ``image_id`` (a ``system:id``) belongs to; when all the
        collections name their bands alike, those names whatever the id."""
        for cid, names in self.sources:
            if image_id.startswith(cid + "/"):
                return names
        if len({names for _, names in self.sources}) == 1:
            return self.sources[0][1]
        raise ValueError(f"image {image_id} belongs to none of {', '.join(self.collections)}")

    @property
    def band_dtype_sizes(self) -> list[int]:
        """Bytes per value of each band :func:`image_graph` returns: the float32 reflectance bands, then qa."""
        return [REFLECTANCE_BYTES] * len(COMMON_BANDS) + [QA_BYTES]

    @property
    def bytes_per_pixel(self) -> int:
        """Bytes one pixel of :func:`image_graph` costs against the computePixels request limit, by
        the service's rule (:func:`gmsense.sources.earthengine._fetch.request_bytes_per_pixel`): the qa band
        is cast to float32 with the others and every band carries a mask byte, 7 x (4 + 1) = 35.
        (The cache stores 6 x 4 + 1 = 25 bytes a pixel: the service's rule is about the request.)"""
        return request_bytes_per_pixel(self.band_dtype_sizes)


#: Landsat Collection 2 Level-2 surface reflectance = DN x 0.0000275 - 0.2, the same for TM, ETM+ and OLI
#: (USGS LSDS-1618 and LSDS-1619).
LANDSAT_SCALE, LANDSAT_OFFSET = 0.0000275, -0.2

SPECS: dict[str, CollectionSpec] = {
    "sentinel-2": CollectionSpec(
        key="sentinel-2", platform="sentinel-2", sources=((S2_COLLECTION, S2_BANDS),),
        quality_bands=S2_QUALITY_BANDS, scale=1e-4, offset=0.0, resolution_m=10.0,
        grid_origin_m=S2_GRID_ORIGIN_M, first_date="2017-03-28",
    ),
    "landsat": CollectionSpec(
        key="landsat", platform="landsat", sources=tuple((cid, OLI_BANDS) for cid in LANDSAT_COLLECTIONS),
        quality_bands=LANDSAT_QUALITY_BANDS, scale=LANDSAT_SCALE, offset=LANDSAT_OFFSET, resolution_m=30.0,
        grid_origin_m=LANDSAT_GRID_ORIGIN_M, first_date="2013-03-18",
    ),
    "landsat-archive": CollectionSpec(
        key="landsat-archive", platform="landsat",
        sources=((LT05_COLLECTION, TM_ETM_BANDS), (LE07_COLLECTION, TM_ETM_BANDS),
                 *((cid, OLI_BANDS) for cid in LANDSAT_COLLECTIONS)),
        quality_bands=LANDSAT_QUALITY_BANDS, scale=LANDSAT_SCALE, offset=LANDSAT_OFFSET, resolution_m=30.0,
        grid_origin_m=LANDSAT_GRID_ORIGIN_M, first_date="1984-03-16",
    ),
}


def rectangle(bounds: Sequence[float], crs_code: str) -> ee.Geometry:
    """``(minx, miny, maxx, maxy)`` in ``crs_code`` (e.g. ``"EPSG:32650"``, metres) as a planar EE rectangle."""
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    return ee.Geometry.Rectangle([minx, miny, maxx, maxy], crs_code, False)


def _standardise(spec: CollectionSpec, image: ee.Image | ee.ImageCollection,
                 names: Sequence[str]) -> ee.Image | ee.ImageCollection:
    """The reflectance bands ``names`` renamed to :data:`COMMON_BANDS`, and the quality bands."""
    return image.select([*names, *spec.quality_bands], [*COMMON_BANDS, *spec.quality_bands])


def _prepare(spec: CollectionSpec, image: ee.Image, threshold: float) -> ee.Image:
    """Reflectance bands under common names (float32) and the ``qa`` band (uint8), from an image
    of :func:`_standardise`. ``qa`` covers the whole grid asked for (``unmask(0, sameFootprint=false)``):
    0 where the image has no data, including outside its footprint."""
    raw = image.select(list(COMMON_BANDS))
    reflectance = raw.multiply(spec.scale)
    if spec.offset:
        reflectance = reflectance.add(spec.offset)
    reflectance = reflectance.toFloat()
    observed = raw.mask().reduce(ee.Reducer.min()).gt(0).unmask(0, SAME_FOOTPRINT)
    if spec.key == "sentinel-2":
        scl = image.select("SCL")
        clear = image.select("cs_cdf").gte(threshold)
        for klass in S2_SCL_NOT_CLEAR:
            clear = clear.And(scl.neq(klass))
    else:
        clear = (image.select("QA_PIXEL").bitwiseAnd(QA_NOT_CLEAR_BITS).eq(0)
                 .And(image.select("QA_RADSAT").eq(0)))
    clear = clear.unmask(0, SAME_FOOTPRINT).And(observed)
    qa = observed.add(clear).toUint8().rename(QA_BAND)
    return reflectance.addBands(qa)


def _link_cloud_score(coll: ee.ImageCollection) -> ee.ImageCollection:
    return coll.linkCollection(ee.ImageCollection(CLOUD_SCORE_PLUS), ["cs_cdf"])


def _collection(spec: CollectionSpec, region: ee.Geometry, start: str, end_exclusive: str) -> ee.ImageCollection:
    """The images of every collection of ``spec`` in the window, each renamed by :func:`_standardise`."""
    parts = []
    for cid, names in spec.sources:
        coll = _standardise(spec, ee.ImageCollection(cid).filterBounds(region).filterDate(start, end_exclusive),
                            names)
        parts.append(_link_cloud_score(coll) if spec.key == "sentinel-2" else coll)
    merged = parts[0]
    for coll in parts[1:]:
        merged = merged.merge(coll)
    return merged


def listing_graph(spec: CollectionSpec, region: ee.Geometry, start: str, end_exclusive: str,
                  threshold: float) -> ee.ComputedObject:
    """The list ``[[system:id, system:time_start ms, clear share 0..1], ...]`` of images touching
    ``region`` with ``start <= time < end_exclusive`` (ISO dates, UTC). The share is of the whole
    ``region``: pixels outside an image's footprint count as not clear."""

    def describe(image: ee.Image) -> ee.Feature:
        share = (_prepare(spec, image, threshold).select(QA_BAND).eq(QA_CLEAR)
                 .reduceRegion(reducer=ee.Reducer.mean(), geometry=region, scale=LISTING_SCALE_M,
                               bestEffort=True))
        return ee.Feature(None, {"id": image.get("system:id"), "time": image.get("system:time_start"),
                                 "clear": share.get(QA_BAND)})

    described = _collection(spec, region, start, end_exclusive).map(describe)
    return ee.Dictionary(described.reduceColumns(ee.Reducer.toList(3), ["id", "time", "clear"])).get("list")


def image_graph(spec: CollectionSpec, image_id: str, threshold: float) -> ee.Image:
    """The pixels of one image (``system:id``) ready for computePixels (see :func:`_prepare`)."""
    image = _standardise(spec, ee.Image(image_id), spec.source_names(image_id))
    if spec.key == "sentinel-2":
        image = ee.Image(_link_cloud_score(ee.ImageCollection.fromImages([image])).first())
    return _prepare(spec, image, threshold)


def encode(obj: Any) -> Any:
    """The Cloud API JSON of a graph (what the server receives); used by the golden-file tests."""
    return ee.serializer.encode(obj, for_cloud_api=True)
