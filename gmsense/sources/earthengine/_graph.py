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

#: Sentinel-2 scene classification (SCL) classes that are never clear: 1 saturated or defective, 11 snow.
S2_SCL_NOT_CLEAR = (1, 11)
#: Values of the ``qa`` band computePixels returns (masked pixels come back as 0 in NPY output,
#: so "observed" must be its own value).
QA_NO_DATA, QA_CLOUDY, QA_CLEAR = 0, 1, 2
QA_BAND = "qa"
#: Bytes per value of the reflectance bands (float32) and of the qa band (uint8) as :func:`image_graph` makes them.
REFLECTANCE_BYTES, QA_BYTES = 4, 1
#: Scale of the clear-share reduction in the listing, metres: coarse on purpose (cheap), the share
#: only decides which images are worth fetching.
LISTING_SCALE_M = 60.0


@dataclass(frozen=True)
class CollectionSpec:
    """One supported collection: ids, band names (common -> source), scale factors, grid."""

    key: str
    platform: str
    collections: tuple[str, ...]
    bands: tuple[tuple[str, str], ...]
    scale: float
    offset: float
    resolution_m: float
    first_date: str

    @property
    def common_names(self) -> list[str]:
        return [common for common, _ in self.bands]

    @property
    def source_names(self) -> list[str]:
        return [source for _, source in self.bands]

    @property
    def band_dtype_sizes(self) -> list[int]:
        """Bytes per value of each band :func:`image_graph` returns: the float32 reflectance bands, then qa."""
        return [REFLECTANCE_BYTES] * len(self.bands) + [QA_BYTES]

    @property
    def bytes_per_pixel(self) -> int:
        """Bytes one pixel of :func:`image_graph` costs against the computePixels request limit, by
        the service's rule (:func:`gmsense.sources.earthengine._fetch.request_bytes_per_pixel`): the qa band
        is cast to float32 with the others and every band carries a mask byte, 7 x (4 + 1) = 35.
        (The cache stores 6 x 4 + 1 = 25 bytes a pixel: the service's rule is about the request.)"""
        return request_bytes_per_pixel(self.band_dtype_sizes)


SPECS: dict[str, CollectionSpec] = {
    "sentinel-2": CollectionSpec(
        key="sentinel-2", platform="sentinel-2", collections=(S2_COLLECTION,),
        bands=(("blue", "B2"), ("green", "B3"), ("red", "B4"), ("nir", "B8"), ("swir1", "B11"), ("swir2", "B12")),
        scale=1e-4, offset=0.0, resolution_m=10.0, first_date="2017-03-28",
    ),
    "landsat": CollectionSpec(
        key="landsat", platform="landsat", collections=LANDSAT_COLLECTIONS,
        bands=(("blue", "SR_B2"), ("green", "SR_B3"), ("red", "SR_B4"), ("nir", "SR_B5"), ("swir1", "SR_B6"),
               ("swir2", "SR_B7")),
        scale=0.0000275, offset=-0.2, resolution_m=30.0, first_date="2013-03-18",
    ),
}


def rectangle(bounds: Sequence[float], crs_code: str) -> ee.Geometry:
    """``(minx, miny, maxx, maxy)`` in ``crs_code`` (e.g. ``"EPSG:32650"``, metres) as a planar EE rectangle."""
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    return ee.Geometry.Rectangle([minx, miny, maxx, maxy], crs_code, False)


def _prepare(spec: CollectionSpec, image: ee.Image, threshold: float) -> ee.Image:
    """Reflectance bands under common names (float32) and the ``qa`` band (uint8)."""
    raw = image.select(spec.source_names)
    reflectance = raw.multiply(spec.scale)
    if spec.offset:
        reflectance = reflectance.add(spec.offset)
    reflectance = reflectance.toFloat().rename(spec.common_names)
    observed = raw.mask().reduce(ee.Reducer.min()).gt(0).unmask(0)
    if spec.key == "sentinel-2":
        scl = image.select("SCL")
        clear = image.select("cs_cdf").gte(threshold)
        for klass in S2_SCL_NOT_CLEAR:
            clear = clear.And(scl.neq(klass))
    else:
        clear = (image.select("QA_PIXEL").bitwiseAnd(QA_NOT_CLEAR_BITS).eq(0)
                 .And(image.select("QA_RADSAT").eq(0)))
    clear = clear.unmask(0).And(observed)
    qa = observed.add(clear).toUint8().rename(QA_BAND)
    return reflectance.addBands(qa)


def _collection(spec: CollectionSpec, region: ee.Geometry, start: str, end_exclusive: str) -> ee.ImageCollection:
    coll = ee.ImageCollection(spec.collections[0])
    for other in spec.collections[1:]:
        coll = coll.merge(ee.ImageCollection(other))
    coll = coll.filterBounds(region).filterDate(start, end_exclusive)
    if spec.key == "sentinel-2":
        coll = coll.linkCollection(ee.ImageCollection(CLOUD_SCORE_PLUS), ["cs_cdf"])
    return coll


def listing_graph(spec: CollectionSpec, region: ee.Geometry, start: str, end_exclusive: str,
                  threshold: float) -> ee.ComputedObject:
    """The list ``[[system:id, system:time_start ms, clear share 0..1], ...]`` of images touching
    ``region`` with ``start <= time < end_exclusive`` (ISO dates, UTC)."""

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
    image = ee.Image(image_id)
    if spec.key == "sentinel-2":
        image = ee.Image(ee.ImageCollection.fromImages([image])
                         .linkCollection(ee.ImageCollection(CLOUD_SCORE_PLUS), ["cs_cdf"]).first())
    return _prepare(spec, image, threshold)


def encode(obj: Any) -> Any:
    """The Cloud API JSON of a graph (what the server receives); used by the golden-file tests."""
    return ee.serializer.encode(obj, for_cloud_api=True)
