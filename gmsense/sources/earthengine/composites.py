"""The Earth Engine graph of a yearly composite (``gmsense restoration composites --source earthengine``).

The composite is computed server-side, one ``computePixels`` request per tile and year, from the same
collections, band renaming and clear mask as the scan's cubes (:mod:`gmsense.sources.earthengine._graph`):
every image of the collection (``landsat-archive``: Landsat 5 TM, 7 ETM+, 8 and 9 OLI) touching the grid
within the season is reduced to its clear reflectance (``qa`` clear; masked elsewhere, so ETM+ scan-line
gaps and pixels outside the scene are no observation), TM and ETM+ images made OLI-like on the server
with the coefficients of :mod:`gmsense.cube.harmonise` (``earthengine.harmonise``), then
``ImageCollection.median()`` (or, for ``medoid``, ``qualityMosaic`` on minus the squared distance of each
observation to that median), and ``count()`` of the clear observations. A fully masked image is merged
into every collection, so a season without any image gives an empty composite (count 0) instead of an
image without bands.

The answer is the six reflectance bands, the count band and the ``qa`` band (clear where the count is
above 0). :mod:`gmsense.restoration.earthengine_archive` fetches it tile by tile.
"""

from __future__ import annotations

import ee

from gmsense.cube.harmonise import HARMONISED_SENSORS, TRANSFORMS, Transform, sensor_of
from gmsense.sources.earthengine import _graph as graphs

#: The band ``qualityMosaic`` maximises for a medoid: minus the squared distance to the median.
CLOSENESS = "closeness"


def _empty_image() -> ee.Image:
    """The six reflectance bands, masked everywhere: merged into every season so an empty one still has bands."""
    return (ee.Image.constant([0.0] * len(graphs.COMMON_BANDS)).rename(list(graphs.COMMON_BANDS)).toFloat()
            .updateMask(ee.Image.constant(0)))


def _clear_reflectance(spec: graphs.CollectionSpec, threshold: float, transform: Transform | None,
                       image: ee.Image) -> ee.Image:
    """One image's reflectance (common names, float32) where its qa says clear, masked elsewhere; made
    OLI-like by ``transform`` (TM / ETM+ images) when given."""
    prepared = graphs._prepare(spec, image, threshold)
    reflectance = prepared.select(list(graphs.COMMON_BANDS)).updateMask(
        prepared.select(graphs.QA_BAND).eq(graphs.QA_CLEAR))
    if transform is not None:
        reflectance = (reflectance.multiply(ee.Image.constant([transform.slopes[b] for b in graphs.COMMON_BANDS]))
                       .add(ee.Image.constant([transform.intercepts[b] for b in graphs.COMMON_BANDS])))
    return reflectance.toFloat()


def season_collection(spec: graphs.CollectionSpec, region: ee.Geometry, start: str, end_exclusive: str,
                      threshold: float, harmonise: str) -> ee.ImageCollection:
    """Every image of ``spec``'s collections touching ``region`` with ``start <= time < end_exclusive`` as its
    clear reflectance (TM / ETM+ made OLI-like by ``harmonise``, a key of :data:`TRANSFORMS` or ``none``), with
    the fully masked placeholder."""
    transform = TRANSFORMS.get(harmonise)
    merged = ee.ImageCollection.fromImages([_empty_image()])
    for cid, names in spec.sources:
        coll = graphs._standardise(spec, ee.ImageCollection(cid).filterBounds(region)
                                   .filterDate(start, end_exclusive), names)
        if spec.key == "sentinel-2":
            coll = graphs._link_cloud_score(coll)
        moved = transform if sensor_of(cid) in HARMONISED_SENSORS else None

        def clear(image: ee.Image, moved: Transform | None = moved) -> ee.Image:
            return _clear_reflectance(spec, threshold, moved, image)

        merged = merged.merge(coll.map(clear))
    return merged


def composite_graph(spec: graphs.CollectionSpec, region: ee.Geometry, start: str, end_exclusive: str, method: str,
                    threshold: float, harmonise: str, count_band: str) -> ee.Image:
    """The season's composite over ``region``: the reflectance bands (``median`` or ``medoid``), the number
    of clear observations as ``count_band`` (float32, 0 where none) and ``qa`` (uint8: clear where the count
    is above 0, else no data), over the whole grid asked for."""
    if method not in ("median", "medoid"):
        raise ValueError(f"unknown composite method {method!r}")
    coll = season_collection(spec, region, start, end_exclusive, threshold, harmonise)
    median = coll.median()
    if method == "medoid":
        def closeness(image: ee.Image) -> ee.Image:
            return image.addBands(image.subtract(median).pow(2).reduce(ee.Reducer.sum()).multiply(-1)
                                  .rename(CLOSENESS))

        composite = coll.map(closeness).qualityMosaic(CLOSENESS).select(list(graphs.COMMON_BANDS))
    else:
        composite = median
    count = coll.select("red").count().unmask(0, graphs.SAME_FOOTPRINT).rename(count_band)
    qa = count.gt(0).multiply(graphs.QA_CLEAR).toUint8().rename(graphs.QA_BAND)
    return composite.toFloat().addBands(count.toFloat()).addBands(qa)
