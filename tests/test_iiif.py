"""IIIF Presentation manifests (v2, v3) and Image API services (v2, v3), as institutions publish them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from indexer.errors import InvalidInput
from indexer.pictures.iiif import (
    IIIFItem,
    image_url,
    info_url,
    is_image_service,
    is_manifest,
    manifest_items,
    manifest_problems,
)
from indexer.pictures.iiif_image import ImageRequest, parse_region, region_box, region_fragment, region_request

COOKBOOK = "https://iiif.io/api/cookbook/recipe"

# The IIIF cookbook's "simplest manifest — single image file" (recipe 0001).
SIMPLEST_V3: dict[str, Any] = {
    "@context": "http://iiif.io/api/presentation/3/context.json",
    "id": f"{COOKBOOK}/0001-mvm-image/manifest.json",
    "type": "Manifest",
    "label": {"en": ["Single Image Example"]},
    "items": [{
        "id": f"{COOKBOOK}/0001-mvm-image/canvas/p1",
        "type": "Canvas", "height": 1800, "width": 1200,
        "items": [{
            "id": f"{COOKBOOK}/0001-mvm-image/page/p1/1",
            "type": "AnnotationPage",
            "items": [{
                "id": f"{COOKBOOK}/0001-mvm-image/annotation/p0001-image",
                "type": "Annotation", "motivation": "painting",
                "body": {"id": "http://iiif.io/api/presentation/2.1/example/fixtures/resources/page1-full.png",
                         "type": "Image", "format": "image/png", "height": 1800, "width": 1200},
                "target": f"{COOKBOOK}/0001-mvm-image/canvas/p1",
            }],
        }],
    }],
}

GOTTINGEN = "https://iiif.io/api/image/3.0/example/reference/918ecd18c2592080851777620de9bcb5-gottingen"

# The cookbook's "image service" recipe (0005), with a second canvas added: a v3 manifest with
# language maps, metadata, and a service given as a list.
IMAGE_SERVICE_V3: dict[str, Any] = {
    "@context": "http://iiif.io/api/presentation/3/context.json",
    "id": f"{COOKBOOK}/0005-image-service/manifest.json",
    "type": "Manifest",
    "label": {"en": ["Picture of Göttingen taken during the 2019 IIIF Conference"]},
    "items": [
        {
            "id": f"{COOKBOOK}/0005-image-service/canvas/p1",
            "type": "Canvas", "label": {"en": ["Canvas with a single IIIF image"]}, "height": 3024, "width": 4032,
            "metadata": [
                {"label": {"en": ["Date"]}, "value": {"none": ["2019-06-26"]}},
                {"label": {"en": ["Subject"], "de": ["Thema"]}, "value": {"en": ["town hall", "market square"]}},
                {"label": {"en": ["Description"]}, "value": {"en": ["<p>Taken from the <b>Holzmarkt</b> &amp; more</p>"]}},
            ],
            "items": [{
                "id": f"{COOKBOOK}/0005-image-service/page/p1/1", "type": "AnnotationPage",
                "items": [{
                    "id": f"{COOKBOOK}/0005-image-service/annotation/p0001-image",
                    "type": "Annotation", "motivation": "painting",
                    "body": {
                        "id": f"{GOTTINGEN}/full/max/0/default.jpg", "type": "Image", "format": "image/jpeg",
                        "height": 3024, "width": 4032,
                        "service": [{"id": GOTTINGEN, "profile": "level1", "type": "ImageService3"}],
                    },
                    "target": f"{COOKBOOK}/0005-image-service/canvas/p1",
                }],
            }],
        },
        {
            "id": f"{COOKBOOK}/0005-image-service/canvas/p2",
            "type": "Canvas", "label": {"fr": ["Deuxième vue"], "en": ["Second view"]}, "height": 100, "width": 100,
            "items": [{
                "id": f"{COOKBOOK}/0005-image-service/page/p2/1", "type": "AnnotationPage",
                "items": [{
                    "type": "Annotation", "motivation": "painting",
                    "body": {"id": "https://images.example.org/iiif/2/view2/full/full/0/default.jpg", "type": "Image",
                             "service": {"@id": "https://images.example.org/iiif/2/view2/", "@type": "ImageService2",
                                         "profile": "http://iiif.io/api/image/2/level2.json"}},
                    "target": f"{COOKBOOK}/0005-image-service/canvas/p2",
                }],
            }],
        },
    ],
}

# The cookbook's "multiple choice of images in a single view" (recipe 0033): a Choice body.
CHOICE_V3: dict[str, Any] = {
    "@context": "http://iiif.io/api/presentation/3/context.json",
    "id": f"{COOKBOOK}/0033-choice/manifest.json",
    "type": "Manifest",
    "label": {"en": ["John Dee performing an experiment before Queen Elizabeth I."]},
    "items": [{
        "id": f"{COOKBOOK}/0033-choice/canvas/p1", "type": "Canvas", "height": 1271, "width": 2000,
        "items": [{
            "id": f"{COOKBOOK}/0033-choice/page/p1/1", "type": "AnnotationPage",
            "items": [{
                "id": f"{COOKBOOK}/0033-choice/annotation/p0001-image", "type": "Annotation", "motivation": "painting",
                "body": {"type": "Choice", "items": [
                    {"id": "https://iiif.io/api/image/3.0/example/reference/421e65be2ce95439b3ad6ef1f2ab87a9-dee-natural/full/max/0/default.jpg",
                     "type": "Image", "format": "image/jpeg", "label": {"en": ["Natural Light"]},
                     "service": [{"id": "https://iiif.io/api/image/3.0/example/reference/421e65be2ce95439b3ad6ef1f2ab87a9-dee-natural",
                                  "type": "ImageService3", "profile": "level1"}]},
                    {"id": "https://iiif.io/api/image/3.0/example/reference/421e65be2ce95439b3ad6ef1f2ab87a9-dee-xray/full/max/0/default.jpg",
                     "type": "Image", "format": "image/jpeg", "label": {"en": ["X-Ray"]},
                     "service": [{"id": "https://iiif.io/api/image/3.0/example/reference/421e65be2ce95439b3ad6ef1f2ab87a9-dee-xray",
                                  "type": "ImageService3", "profile": "level1"}]},
                ]},
                "target": f"{COOKBOOK}/0033-choice/canvas/p1",
            }],
        }],
    }],
}

MUSEUM = "https://collections.example.museum/iiif"

# A v2 manifest like those museums publish: sequences → canvases → images → resource → service
# (level 2), labels as strings, lists and @value objects, a canvas that has no image, an auth
# service listed before the image service, and an oa:Choice.
MUSEUM_V2: dict[str, Any] = {
    "@context": "http://iiif.io/api/presentation/2/context.json",
    "@id": f"{MUSEUM}/object/SK-A-1718/manifest",
    "@type": "sc:Manifest",
    "label": "Winter Landscape with Ice Skaters",
    "metadata": [{"label": "Object number", "value": "SK-A-1718"}],
    "attribution": "Example Museum",
    "sequences": [{
        "@id": f"{MUSEUM}/object/SK-A-1718/sequence/normal",
        "@type": "sc:Sequence",
        "canvases": [
            {
                "@id": f"{MUSEUM}/object/SK-A-1718/canvas/c1",
                "@type": "sc:Canvas",
                "label": "recto",
                "height": 4000, "width": 6000,
                "metadata": [
                    {"label": "Artist", "value": "Hendrick Avercamp"},
                    {"label": "Date", "value": [{"@value": "c. 1608", "@language": "en"}, {"@value": "ca. 1608", "@language": "nl"}]},
                    {"label": [{"@value": "Material", "@language": "en"}], "value": "oil on panel"},
                    {"label": "Artist", "value": "workshop of Avercamp"},
                ],
                "images": [{
                    "@id": f"{MUSEUM}/object/SK-A-1718/annotation/a1",
                    "@type": "oa:Annotation",
                    "motivation": "sc:painting",
                    "resource": {
                        "@id": f"{MUSEUM}/image/SK-A-1718/full/full/0/default.jpg",
                        "@type": "dctypes:Image", "format": "image/jpeg", "height": 4000, "width": 6000,
                        "service": {
                            "@context": "http://iiif.io/api/image/2/context.json",
                            "@id": f"{MUSEUM}/image/SK-A-1718",
                            "profile": "http://iiif.io/api/image/2/level2.json",
                        },
                    },
                    "on": f"{MUSEUM}/object/SK-A-1718/canvas/c1",
                }],
            },
            {
                "@id": f"{MUSEUM}/object/SK-A-1718/canvas/c2",
                "@type": "sc:Canvas", "label": "frame (not photographed)", "height": 10, "width": 10,
                "images": [],
            },
            {
                "@id": f"{MUSEUM}/object/SK-A-1718/canvas/c3",
                "@type": "sc:Canvas",
                "label": [{"@value": "verso", "@language": "en"}, {"@value": "achterkant", "@language": "nl"}],
                "height": 4000, "width": 6000,
                "images": [{
                    "@type": "oa:Annotation", "motivation": "sc:painting",
                    "resource": {
                        "@id": f"{MUSEUM}/image/SK-A-1718-verso/full/full/0/default.jpg",
                        "@type": "dctypes:Image",
                        "service": [
                            {"@context": "http://iiif.io/api/auth/1/context.json", "@id": f"{MUSEUM}/auth/login",
                             "profile": "http://iiif.io/api/auth/1/login"},
                            {"@context": "http://iiif.io/api/image/2/context.json", "@id": f"{MUSEUM}/image/SK-A-1718-verso/info.json",
                             "profile": ["http://iiif.io/api/image/2/level1.json", {"formats": ["jpg"]}]},
                        ],
                    },
                    "on": f"{MUSEUM}/object/SK-A-1718/canvas/c3",
                }],
            },
            {
                "@id": f"{MUSEUM}/object/SK-A-1718/canvas/c4",
                "@type": "sc:Canvas", "label": "raking light", "height": 4000, "width": 6000,
                "images": [{
                    "@type": "oa:Annotation", "motivation": "sc:painting",
                    "resource": {
                        "@type": "oa:Choice",
                        "default": {"@id": f"{MUSEUM}/image/SK-A-1718-raking/full/full/0/default.jpg", "@type": "dctypes:Image",
                                    "service": {"@id": f"{MUSEUM}/image/SK-A-1718-raking", "profile": "http://iiif.io/api/image/2/level2.json"}},
                        "item": [{"@id": f"{MUSEUM}/image/SK-A-1718-uv/full/full/0/default.jpg", "@type": "dctypes:Image"}],
                    },
                    "on": f"{MUSEUM}/object/SK-A-1718/canvas/c4",
                }],
            },
        ],
    }],
}


# ------------------------------------------------------------------------------------------- manifests


def test_the_simplest_v3_manifest_gives_its_image_url() -> None:
    assert is_manifest(SIMPLEST_V3) and not is_image_service(SIMPLEST_V3)
    assert manifest_items(SIMPLEST_V3) == [IIIFItem(
        service=None, url="http://iiif.io/api/presentation/2.1/example/fixtures/resources/page1-full.png", label=None,
        external_id=f"{COOKBOOK}/0001-mvm-image/canvas/p1", metadata={"manifest": "Single Image Example"},
    )]
    assert manifest_problems(SIMPLEST_V3) == []


def test_a_v3_manifest_gives_services_labels_and_metadata() -> None:
    first, second = manifest_items(IMAGE_SERVICE_V3)
    assert first.service == GOTTINGEN and first.url == f"{GOTTINGEN}/full/max/0/default.jpg"
    assert first.label == "Canvas with a single IIIF image"
    assert first.external_id == f"{COOKBOOK}/0005-image-service/canvas/p1"
    assert first.metadata == {
        "manifest": "Picture of Göttingen taken during the 2019 IIIF Conference",
        "Date": "2019-06-26",
        "Subject": "town hall; market square",  # a language map's first language, all its values
        "Description": "Taken from the Holzmarkt & more",  # HTML loses its tags
    }
    # a v2 service inside a v3 manifest (@id, ImageService2, trailing slash)
    assert second.service == "https://images.example.org/iiif/2/view2"
    assert second.label == "Deuxième vue"  # a language map's first value
    assert second.external_id == f"{COOKBOOK}/0005-image-service/canvas/p2"


def test_a_choice_body_gives_its_first_image() -> None:
    (item,) = manifest_items(CHOICE_V3)
    assert item.service == "https://iiif.io/api/image/3.0/example/reference/421e65be2ce95439b3ad6ef1f2ab87a9-dee-natural"
    assert item.url is not None and item.url.endswith("dee-natural/full/max/0/default.jpg")
    assert item.label is None and item.region is None
    assert item.metadata == {  # it was a choice, of how many, and the other one, for whoever wants it
        "manifest": "John Dee performing an experiment before Queen Elizabeth I.",
        "choice": "first of 2: Natural Light",
        "choice alternatives": "X-Ray <https://iiif.io/api/image/3.0/example/reference/421e65be2ce95439b3ad6ef1f2ab87a9-dee-xray>",
    }


def test_a_museum_v2_manifest_skips_the_canvas_without_an_image_and_says_so() -> None:
    assert is_manifest(MUSEUM_V2)
    items = manifest_items(MUSEUM_V2)
    assert [i.external_id for i in items] == [f"{MUSEUM}/object/SK-A-1718/canvas/c{n}" for n in (1, 3, 4)]
    recto, verso, raking = items
    assert recto.service == f"{MUSEUM}/image/SK-A-1718"
    assert recto.url == f"{MUSEUM}/image/SK-A-1718/full/full/0/default.jpg"
    assert recto.label == "recto"
    assert recto.metadata == {"manifest": "Winter Landscape with Ice Skaters", "Artist": "Hendrick Avercamp; workshop of Avercamp",
                              "Date": "c. 1608; ca. 1608", "Material": "oil on panel"}
    assert verso.service == f"{MUSEUM}/image/SK-A-1718-verso"  # the image service, not the auth service; no /info.json
    assert verso.label == "verso"
    assert raking.service == f"{MUSEUM}/image/SK-A-1718-raking"  # oa:Choice: its default
    problems = manifest_problems(MUSEUM_V2)
    assert problems == [(f"canvas 2 of 4 ({MUSEUM}/object/SK-A-1718/canvas/c2, “frame (not photographed)”): "
                         "no image (its `images` list is empty or missing)")]


def test_a_canvas_that_paints_no_image_is_a_problem_not_an_item() -> None:
    doc = copy.deepcopy(IMAGE_SERVICE_V3)
    doc["items"][1]["items"][0]["items"][0]["body"] = {"id": "https://example.org/film.mp4", "type": "Video"}
    doc["items"].append({"id": "https://example.org/canvas/empty", "type": "Canvas", "items": []})
    doc["items"].append("https://example.org/canvas/referenced-only")
    assert [i.external_id for i in manifest_items(doc)] == [f"{COOKBOOK}/0005-image-service/canvas/p1"]
    assert manifest_problems(doc) == [
        f"canvas 2 of 4 ({COOKBOOK}/0005-image-service/canvas/p2, “Deuxième vue”): not a picture: it paints Video",
        "canvas 3 of 4 (https://example.org/canvas/empty): no image (no painting annotation)",
        "canvas 4 of 4 is a string, not a canvas",
    ]


@pytest.mark.parametrize("doc, said", [
    ([SIMPLEST_V3], "is a JSON object, not a list"),
    ("https://example.org/manifest.json", "not a string"),
    ({"@context": "http://iiif.io/api/presentation/3/context.json", "id": "https://example.org/m", "type": "Manifest", "items": []},
     "this manifest https://example.org/m has no canvases"),
    ({"@context": "http://iiif.io/api/presentation/2/context.json", "@type": "sc:Manifest", "sequences": []}, "has no canvases"),
    ({"@context": "http://iiif.io/api/presentation/2/context.json", "@type": "sc:Manifest", "sequences": [{"canvases": [
        {"@id": "https://example.org/c1", "images": []}, {"@id": "https://example.org/c2"}]}]},
     "no canvas of this manifest has an image .*c1.*c2"),
    ({"@context": "http://iiif.io/api/presentation/3/context.json", "type": "Collection", "items": [{"id": "m", "type": "Manifest"}]},
     "is a IIIF Collection"),
    ({"@context": "http://iiif.io/api/image/2/context.json", "@id": "https://example.org/iiif/x", "width": 1, "height": 1},
     "Image API service"),
    ({"title": "a page"}, "neither `items` \\(v3\\) nor `sequences` \\(v2\\)"),
])
def test_what_is_not_a_usable_manifest_is_said_so(doc: Any, said: str) -> None:
    with pytest.raises(InvalidInput, match=said) as caught:
        manifest_items(doc)
    assert caught.value.code == "invalid_manifest" and caught.value.status == 400


def test_a_manifest_whose_every_canvas_is_bad_still_lists_its_problems() -> None:
    doc = {"@type": "sc:Manifest", "sequences": [{"canvases": [{"@id": "https://example.org/c1", "images": []}]}]}
    assert manifest_problems(doc) == ["canvas 1 of 1 (https://example.org/c1): no image (its `images` list is empty or missing)"]


# --------------------------------------------------------------------------------------- image services


def v2_info(width: int, height: int, level: int = 2, **extra: Any) -> dict[str, Any]:
    return {"@context": "http://iiif.io/api/image/2/context.json", "@id": f"{MUSEUM}/image/SK-A-1718",
            "protocol": "http://iiif.io/api/image", "width": width, "height": height,
            "profile": [f"http://iiif.io/api/image/2/level{level}.json", {"formats": ["jpg", "png"], "qualities": ["default", "gray"]}],
            "tiles": [{"width": 512, "scaleFactors": [1, 2, 4, 8, 16]}], **extra}


def v3_info(width: int, height: int, level: int = 1, **extra: Any) -> dict[str, Any]:
    return {"@context": "http://iiif.io/api/image/3/context.json", "id": GOTTINGEN, "type": "ImageService3",
            "protocol": "http://iiif.io/api/image", "profile": f"level{level}", "width": width, "height": height, **extra}


def test_image_services_are_recognised() -> None:
    assert is_image_service(v2_info(10, 10)) and is_image_service(v3_info(10, 10))
    assert is_image_service({"@context": ["http://www.w3.org/ns/anno.jsonld", "http://iiif.io/api/image/3/context.json"], "id": "x"})
    assert not is_image_service({"@context": "http://iiif.io/api/image/2/context.json"})  # no @id
    assert not is_image_service(MUSEUM_V2) and not is_image_service([]) and not is_manifest(v3_info(10, 10))
    assert info_url(GOTTINGEN + "/") == GOTTINGEN + "/info.json" and info_url(GOTTINGEN + "/info.json") == GOTTINGEN + "/info.json"


def test_a_level2_v2_service_is_asked_for_the_shorter_side_at_the_target() -> None:
    base = f"{MUSEUM}/image/SK-A-1718"
    assert image_url(v2_info(6000, 4000), 224) == f"{base}/full/,224/0/default.jpg"  # landscape: height is shorter
    assert image_url(v2_info(3000, 4500), 224) == f"{base}/full/224,/0/default.jpg"  # portrait: width is shorter
    assert image_url(v2_info(2000, 2000), 336) == f"{base}/full/336,/0/default.jpg"


def test_a_v3_service_is_asked_the_same_way() -> None:
    assert image_url(v3_info(4032, 3024), 224) == f"{GOTTINGEN}/full/,224/0/default.jpg"
    assert image_url(v3_info(3024, 4032), 224) == f"{GOTTINGEN}/full/224,/0/default.jpg"


def test_a_small_picture_is_never_upscaled() -> None:
    assert image_url(v2_info(200, 150), 224) == f"{MUSEUM}/image/SK-A-1718/full/full/0/default.jpg"
    assert image_url(v3_info(200, 150), 224) == f"{GOTTINGEN}/full/max/0/default.jpg"
    assert image_url(v3_info(5000, 224), 224) == f"{GOTTINGEN}/full/max/0/default.jpg"  # shorter side exactly the target


def test_the_service_limits_are_respected() -> None:
    # maxWidth 200: asking for a height of 224 would make the width 280
    assert image_url(v3_info(10000, 8000, level=2, maxWidth=200), 224) == f"{GOTTINGEN}/full/,160/0/default.jpg"
    assert image_url(v3_info(4000, 6000, level=2, maxArea=40000), 224) == f"{GOTTINGEN}/full/163,/0/default.jpg"


def test_a_level0_service_is_asked_only_for_a_listed_size() -> None:
    sizes = [{"width": 150, "height": 100}, {"width": 600, "height": 400}, {"width": 1200, "height": 800}, {"width": 4032, "height": 3024}]
    v3 = v3_info(6000, 4000, level=0, sizes=sizes)
    assert image_url(v3, 224) == f"{GOTTINGEN}/full/600,400/0/default.jpg"  # the smallest whose shorter side is ≥ 224
    assert image_url(v3, 800) == f"{GOTTINGEN}/full/1200,800/0/default.jpg"
    assert image_url(v3, 5000) == f"{GOTTINGEN}/full/4032,3024/0/default.jpg"  # none large enough: the largest
    v2 = v2_info(6000, 4000, level=0, sizes=list(reversed(sizes)))
    assert image_url(v2, 224) == f"{MUSEUM}/image/SK-A-1718/full/600,/0/default.jpg"
    # level 0 without sizes: only the full picture may be asked for
    assert image_url(v3_info(6000, 4000, level=0), 224) == f"{GOTTINGEN}/full/max/0/default.jpg"
    assert image_url(v2_info(6000, 4000, level=0), 224) == f"{MUSEUM}/image/SK-A-1718/full/full/0/default.jpg"
    compliance_uri = dict(v2_info(6000, 4000), profile="http://iiif.io/api/image/2/level0.json", sizes=sizes)
    assert image_url(compliance_uri, 224) == f"{MUSEUM}/image/SK-A-1718/full/600,/0/default.jpg"


def test_the_base_url_loses_its_trailing_slash() -> None:
    info = dict(v3_info(4000, 3000), id=GOTTINGEN + "/")
    assert image_url(info, 224) == f"{GOTTINGEN}/full/,224/0/default.jpg"


@pytest.mark.parametrize("info, said", [
    ({"@context": "http://iiif.io/api/image/2/context.json", "@id": "https://example.org/iiif/x", "height": 10}, "no valid width"),
    ({"@context": "http://iiif.io/api/image/3/context.json", "id": "https://example.org/iiif/x", "width": 10, "height": "10"}, "no valid height"),
    ({"@context": "http://iiif.io/api/image/3/context.json", "id": "https://example.org/iiif/x", "width": 0, "height": 10}, "no valid width"),
    ({"@context": "http://iiif.io/api/image/2/context.json", "width": 10, "height": 10}, "has no `id`"),
    (["not", "an", "info.json"], "not a list"),
])
def test_an_info_json_without_what_is_needed_is_said_so(info: Any, said: str) -> None:
    with pytest.raises(InvalidInput, match=said) as caught:
        image_url(info, 224)
    assert caught.value.code == "invalid_image_service"


def test_only_manifests_are_manifests() -> None:
    assert is_manifest(SIMPLEST_V3) and is_manifest(MUSEUM_V2) and is_manifest(CHOICE_V3)
    assert is_manifest({"@context": "http://iiif.io/api/presentation/2/context.json", "sequences": []})
    for doc in ([SIMPLEST_V3], "manifest", None, v2_info(10, 10), v3_info(10, 10), {"title": "a page", "items": []},
                {"@context": "http://iiif.io/api/presentation/3/context.json", "type": "Collection", "items": []}):
        assert not is_manifest(doc), doc


# -------------------------------------------- the cookbook's harder recipes: choice, composition, region, time

RECIPE = "https://iiif.example.org/recipe"  # never fetched: these are read, not served
REFERENCE = "https://iiif.example.org/image/3.0/reference"


def v3_manifest(*canvases: dict[str, Any], label: str = "Recipe") -> dict[str, Any]:
    return {"@context": "http://iiif.io/api/presentation/3/context.json", "id": f"{RECIPE}/manifest.json",
            "type": "Manifest", "label": {"en": [label]}, "items": list(canvases)}


def v3_canvas(name: str, *annotations: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": f"{RECIPE}/canvas/{name}", "type": "Canvas", **extra,
            "items": [{"id": f"{RECIPE}/page/{name}/1", "type": "AnnotationPage", "items": list(annotations)}]}


def painting(body: Any, target: Any, aid: str | None = None) -> dict[str, Any]:
    return {**({"id": aid} if aid else {}), "type": "Annotation", "motivation": "painting", "body": body, "target": target}


def image(name: str, service: str | None = "ImageService3", **extra: Any) -> dict[str, Any]:
    body = {"id": f"{REFERENCE}/{name}/full/max/0/default.jpg", "type": "Image", "format": "image/jpeg", **extra}
    if service:
        body["service"] = [{"id": f"{REFERENCE}/{name}", "type": service, "profile": "level1"}]
    return body


# Recipe 0036, "composition from multiple images": a folio painted whole, and a miniature photographed
# on its own painted over the place it has on the folio.
COMPOSITION = v3_manifest(v3_canvas(
    "p1",
    painting(image("chateauroux", width=7216, height=5412), f"{RECIPE}/canvas/p1", f"{RECIPE}/annotation/p0001-image"),
    painting(image("chateauroux_miniature", service="ImageService1", width=2138, height=2414,
                   label={"fr": ["Miniature [Chilpéric Ier tue Galswinthe]"]}),
             f"{RECIPE}/canvas/p1#xywh=3949,994,1091,1232", f"{RECIPE}/annotation/p0002-image"),
    label={"none": ["f. 033v-034r"]}, width=7216, height=5412,
), label="Folio from Grandes Chroniques de France, ca. 1460")


def test_each_image_painted_on_a_canvas_is_a_picture_of_it_with_its_place():
    folio, miniature = manifest_items(COMPOSITION)
    assert folio.service == f"{REFERENCE}/chateauroux" and miniature.service == f"{REFERENCE}/chateauroux_miniature"
    assert folio.external_id == f"{RECIPE}/canvas/p1"  # painted on the whole canvas: the canvas's id
    assert miniature.external_id == f"{RECIPE}/canvas/p1#xywh=3949,994,1091,1232"  # on part of it: with the part
    assert folio.label == miniature.label == "f. 033v-034r"
    assert folio.region is None and miniature.region is None  # all of each image: the place is on the canvas
    assert folio.metadata == {"manifest": "Folio from Grandes Chroniques de France, ca. 1460", "canvas picture": "1 of 2"}
    assert miniature.metadata == {
        "manifest": "Folio from Grandes Chroniques de France, ca. 1460",
        "on canvas": "xywh=3949,994,1091,1232, in canvas coordinates (the canvas is 7216×5412)",
        "canvas picture": "2 of 2",
        "image label": "Miniature [Chilpéric Ier tue Galswinthe]",
    }
    assert manifest_problems(COMPOSITION) == []


def test_two_pictures_that_would_share_an_id_do_not():
    doc = v3_manifest(v3_canvas("p1", painting(image("a"), f"{RECIPE}/canvas/p1"),
                                painting(image("b"), f"{RECIPE}/canvas/p1", f"{RECIPE}/annotation/b"),
                                painting(image("c"), f"{RECIPE}/canvas/p1")))
    assert [i.external_id for i in manifest_items(doc)] == [
        f"{RECIPE}/canvas/p1", f"{RECIPE}/annotation/b", f"{RECIPE}/canvas/p1#3"]  # the annotation's id, else the place


def test_a_v2_canvas_with_an_image_on_part_of_it_says_where():
    doc = copy.deepcopy(MUSEUM_V2)
    images = doc["sequences"][0]["canvases"][0]["images"]
    images.append({"@type": "oa:Annotation", "motivation": "sc:painting",
                   "resource": {"@id": f"{MUSEUM}/image/detail/full/full/0/default.jpg", "@type": "dctypes:Image",
                                "service": {"@id": f"{MUSEUM}/image/detail", "profile": "http://iiif.io/api/image/2/level2.json"}},
                   "on": {"@type": "oa:SpecificResource", "full": f"{MUSEUM}/object/SK-A-1718/canvas/c1",
                          "selector": {"@type": "oa:FragmentSelector", "value": "xywh=100,200,300,400"}}})
    recto, detail = manifest_items(doc)[:2]
    assert detail.service == f"{MUSEUM}/image/detail"
    assert detail.external_id == f"{MUSEUM}/object/SK-A-1718/canvas/c1#xywh=100,200,300,400"
    assert detail.metadata["on canvas"] == "xywh=100,200,300,400, in canvas coordinates (the canvas is 6000×4000)"
    assert detail.metadata["Artist"] == "Hendrick Avercamp; workshop of Avercamp"  # the canvas's own pairs too
    assert recto.external_id == f"{MUSEUM}/object/SK-A-1718/canvas/c1"


# Recipe 0326, "annotating a specific layer": a Choice whose X-ray item's service carries annotations.
LAYERS = v3_manifest(v3_canvas("p1", painting({"type": "Choice", "items": [
    image("dee-natural", label={"en": ["Natural Light"]}, width=2000, height=1271),
    dict(image("dee-xray", label={"en": ["X-ray"]}), service=[{
        "id": f"{REFERENCE}/dee-xray", "type": "ImageService3", "profile": "level1",
        "annotations": [{"id": f"{RECIPE}/page/p2/1", "type": "AnnotationPage", "items": [{
            "type": "Annotation", "motivation": "tagging",
            "body": {"type": "TextualBody", "value": "A group of skulls.", "language": "en"},
            "target": {"type": "SpecificResource", "source": f"{REFERENCE}/dee-xray",
                       "selector": {"type": "ImageApiSelector", "region": "810,900,260,370"}}}]}]}]),
]}, f"{RECIPE}/canvas/p1"), width=2000, height=1271), label="Choice Example with layer specific annotation")


def test_a_choice_of_layers_reads_the_first_and_keeps_the_others_in_its_metadata():
    (item,) = manifest_items(LAYERS)
    assert item.service == f"{REFERENCE}/dee-natural" and item.region is None
    assert item.external_id == f"{RECIPE}/canvas/p1"
    assert item.metadata["choice"] == "first of 2: Natural Light"
    assert item.metadata["choice alternatives"] == f"X-ray <{REFERENCE}/dee-xray>"
    assert "image label" not in item.metadata  # the choice names it


def test_a_v2_choice_reads_its_default_and_a_v3_choice_its_first_image():
    raking = manifest_items(MUSEUM_V2)[2]
    assert raking.service == f"{MUSEUM}/image/SK-A-1718-raking"
    assert raking.metadata["choice"] == "default of 2"  # unlabelled
    assert raking.metadata["choice alternatives"] == f"<{MUSEUM}/image/SK-A-1718-uv/full/full/0/default.jpg>"
    doc = v3_manifest(v3_canvas("p1", painting({"type": "Choice", "items": [
        {"id": f"{RECIPE}/film.mp4", "type": "Video", "label": {"en": ["Film"]}},
        image("still", label={"en": ["Still"]}), image("other"),
    ]}, f"{RECIPE}/canvas/p1")))
    (item,) = manifest_items(doc)
    assert item.service == f"{REFERENCE}/still"  # the first item a viewer could show as a picture
    assert item.metadata["choice"] == "item 2 of 3, the first image: Still"
    assert item.metadata["choice alternatives"] == f"Film <{RECIPE}/film.mp4>; <{REFERENCE}/other>"


# Recipe 0299, "region of an image": a SpecificResource whose ImageApiSelector names the article.
REGION = v3_manifest(v3_canvas("p1", painting({
    "id": f"{RECIPE}/body/b1", "type": "SpecificResource",
    "source": image("newspaper-p2", width=3536, height=4999),
    "selector": {"type": "ImageApiSelector", "region": "1768,2423,1768,2080"},
}, f"{RECIPE}/canvas/p1"), width=1768, height=2080), label="Berliner Tageblatt article, 'Ein neuer Sicherungsplan?'")


def test_a_specific_resource_is_the_region_its_selector_names():
    (item,) = manifest_items(REGION)
    assert item.service == f"{REFERENCE}/newspaper-p2"  # the source's service, not the SpecificResource's id
    assert item.url == f"{REFERENCE}/newspaper-p2/full/max/0/default.jpg"
    assert item.region == "1768,2423,1768,2080" and item.external_id == f"{RECIPE}/canvas/p1"
    assert item.metadata["image region"] == "1768,2423,1768,2080, in pixels of the source image (3536×4999)"
    assert manifest_problems(REGION) == []


@pytest.mark.parametrize("selector, region, said", [
    ({"type": "FragmentSelector", "value": "xywh=10,20,30,40"}, "10,20,30,40", "10,20,30,40, in pixels of the source image (3536×4999)"),
    ({"type": "FragmentSelector", "value": "xywh=percent:0,50,100,50"}, "pct:0,50,100,50", "pct:0,50,100,50, in percent of the source image (3536×4999)"),
    ({"@context": "http://iiif.io/api/annex/openannotation/context.json", "type": "iiif:ImageApiSelector",
      "region": "xywh=0,0,1000,1000"}, "0,0,1000,1000", "0,0,1000,1000, in pixels of the source image (3536×4999)"),  # an early 0299
    ({"type": "ImageApiSelector", "region": "square"}, "square", "square: the centred square of the source image (3536×4999)"),
    ({"type": "ImageApiSelector", "region": "full"}, None, None),
    ({"type": "SvgSelector", "value": "<svg/>"}, None, "the whole image: its SvgSelector is not applied"),
    ([{"type": "SvgSelector", "value": "<svg/>"}, {"type": "ImageApiSelector", "region": "pct:25,25,50,50"}],
     "pct:25,25,50,50", "pct:25,25,50,50, in percent of the source image (3536×4999)"),  # the first one that is read
])
def test_the_selectors_a_region_is_named_by(selector: Any, region: str | None, said: str | None):
    doc = copy.deepcopy(REGION)
    doc["items"][0]["items"][0]["items"][0]["body"]["selector"] = selector
    (item,) = manifest_items(doc)
    assert item.region == region and item.metadata.get("image region") == said


def test_a_v2_specific_resource_is_read_from_its_full_image():
    doc = copy.deepcopy(MUSEUM_V2)
    doc["sequences"][0]["canvases"][0]["images"][0]["resource"] = {
        "@type": "oa:SpecificResource",
        "full": {"@id": f"{MUSEUM}/image/SK-A-1718/full/full/0/default.jpg", "@type": "dctypes:Image",
                 "service": {"@id": f"{MUSEUM}/image/SK-A-1718", "profile": "http://iiif.io/api/image/2/level2.json"}},
        "selector": {"@context": "http://iiif.io/api/annex/openannotation/context.json", "@type": "iiif:ImageApiSelector",
                     "region": "0,0,3000,4000"}}
    recto = manifest_items(doc)[0]
    assert (recto.service, recto.region) == (f"{MUSEUM}/image/SK-A-1718", "0,0,3000,4000")


@pytest.mark.parametrize("body, said", [
    ({"type": "SpecificResource", "source": image("p"), "selector": {"type": "ImageApiSelector", "region": "a,b,c,d"}},
     "its SpecificResource's ImageApiSelector has a malformed region: 'a,b,c,d' is not a region"),
    ({"type": "SpecificResource", "source": image("p"), "selector": {"type": "ImageApiSelector", "region": "0,0,0,10"}},
     "has a malformed region: the region '0,0,0,10' has no width or no height"),
    ({"type": "SpecificResource", "source": image("p"), "selector": {"type": "ImageApiSelector", "region": "0.5,0,10,10"}},
     "in pixels, which are whole numbers"),
    ({"type": "SpecificResource", "source": image("p"), "selector": {"type": "FragmentSelector", "value": "t=1,2"}},
     "its SpecificResource's FragmentSelector 't=1,2' is not an xywh= region of the image"),
    ({"type": "SpecificResource", "selector": {"type": "ImageApiSelector", "region": "0,0,1,1"}},
     "its SpecificResource has no `source` image"),
    ({"type": "Choice", "items": []}, "its Choice lists no items"),
    ({"type": "Choice", "items": [{"type": "SpecificResource", "source": image("p"),
                                   "selector": {"type": "ImageApiSelector", "region": "-1,0,5,5"}}]},
     "item 1 of its Choice: its SpecificResource's ImageApiSelector has a malformed region"),
    ({"type": "Image", "format": "image/jpeg"}, "its image has neither an id nor an Image API service"),
])
def test_a_painting_that_cannot_be_read_is_a_problem_and_the_canvas_other_images_are_read(body: dict[str, Any], said: str):
    doc = v3_manifest(v3_canvas("p1", painting(image("whole"), f"{RECIPE}/canvas/p1"),
                                painting(body, f"{RECIPE}/canvas/p1#xywh=0,0,10,10")))
    assert [i.service for i in manifest_items(doc)] == [f"{REFERENCE}/whole"]
    (problem,) = manifest_problems(doc)
    assert problem.startswith(f"canvas 1 of 1 ({RECIPE}/canvas/p1), painting 2 of 2: ") and said in problem, problem
    alone = v3_manifest(v3_canvas("p1", painting(body, f"{RECIPE}/canvas/p1")))
    with pytest.raises(InvalidInput, match="no canvas of this manifest has an image"):
        manifest_items(alone)
    (problem,) = manifest_problems(alone)
    assert said in problem and "painting" not in problem


# Recipe 0489 ("multimedia canvas") and images on a timeline: a canvas with a duration, an image shown
# from second 11 to 42, a video beside it, texts before and after.
def text(value: str) -> dict[str, Any]:
    return {"type": "TextualBody", "format": "text/html", "value": value, "language": "en"}


TIMELINE = v3_manifest(
    v3_canvas("av", painting(image("100320001004"), f"{RECIPE}/canvas/av#t=11,42"),
              painting({"id": f"{RECIPE}/30-minute-clock.mp4", "type": "Video", "duration": 1801.055},
                       f"{RECIPE}/canvas/av#xywh=1000,500,5000,6000&t=11,42"),
              painting(text("<p>Press Play</p>"), f"{RECIPE}/canvas/av#xywh=30200,10200,15000,5000&t=0,1"),
              painting(text("<p>In 10 seconds…</p>"), f"{RECIPE}/canvas/av#xywh=20220,5000,30000,5000&t=1,11"),
              painting(image("slide-2"), {"type": "SpecificResource", "source": f"{RECIPE}/canvas/av",
                                          "selector": {"type": "FragmentSelector", "value": "xywh=0,0,70399,31722&t=42,180"}}),
              width=70399, height=31722, duration=180),
    v3_canvas("song", painting({"id": f"{RECIPE}/song.mp4", "type": "Sound", "format": "audio/mp4"}, f"{RECIPE}/canvas/song"),
              duration=120),
    v3_canvas("film", painting({"id": f"{RECIPE}/film.mp4", "format": "video/mp4"}, f"{RECIPE}/canvas/film"),  # untyped
              painting({"type": "Choice", "items": [{"id": f"{RECIPE}/a.mp4", "type": "Video"}]}, f"{RECIPE}/canvas/film"),
              duration=60),
    label="Multimedia Canvas",
)


def test_images_on_a_timeline_are_read_with_their_time_and_sound_or_video_alone_is_a_problem():
    first, second = manifest_items(TIMELINE)
    assert first.service == f"{REFERENCE}/100320001004" and first.external_id == f"{RECIPE}/canvas/av#t=11,42"
    assert first.metadata["on timeline"] == "t=11,42, in seconds (the canvas lasts 180 s)"
    assert first.metadata["canvas also paints"] == "Video, TextualBody ×2"
    assert "on canvas" not in first.metadata
    assert second.external_id == f"{RECIPE}/canvas/av#xywh=0,0,70399,31722&t=42,180"  # a target with a selector
    assert second.metadata["on timeline"] == "t=42,180, in seconds (the canvas lasts 180 s)"
    assert second.metadata["on canvas"] == "xywh=0,0,70399,31722, in canvas coordinates (the canvas is 70399×31722)"
    assert manifest_problems(TIMELINE) == [
        f"canvas 2 of 3 ({RECIPE}/canvas/song): not a picture: it paints Sound",
        f"canvas 3 of 3 ({RECIPE}/canvas/film): not a picture: it paints Video, a Choice of Video",
    ]


# ----------------------------------------------------------------------------------------------- regions


@pytest.mark.parametrize("text, region", [
    ("1768,2423,1768,2080", "1768,2423,1768,2080"), (" 1, 2, 3, 4 ", "1,2,3,4"), ("xywh=pixel:1,2,3,4", "1,2,3,4"),
    ("pct:10,20.5,30,40", "pct:10,20.5,30,40"), ("xywh=percent:10,20,30,40", "pct:10,20,30,40"),
    ("pct:0,0,100,100", None), ("full", None), ("square", "square"), ("10.0,0,5,5", "10,0,5,5"),
])
def test_regions_are_read_as_the_image_api_writes_them(text: str, region: str | None):
    assert parse_region(text) == region


@pytest.mark.parametrize("text, said", [
    ("1,2,3", "not a region"), ("-1,0,5,5", "not a region"), ("0,0,5,0", "no width or no height"),
    ("pct:100,0,5,5", "starts beyond the picture"), ("1.5,0,5,5", "whole numbers"), (12, "not a number"),
    ("1,2,3,4,5", "not a region"), ("max,", "not a region"),
])
def test_a_malformed_region_is_said_so(text: Any, said: str):
    with pytest.raises(ValueError, match=said):
        parse_region(text)


def test_a_region_is_those_pixels_of_a_picture_clipped_to_it():
    assert region_box("10,20,30,40", 100, 100) == (10, 20, 30, 40)
    assert region_box("90,90,30,40", 100, 100) == (90, 90, 10, 10)  # clipped, as a server does
    assert region_box("pct:50,0,50,25", 400, 300) == (200, 0, 200, 75)
    assert region_box("square", 400, 300) == (50, 0, 300, 300) and region_box("square", 300, 400) == (0, 50, 300, 300)
    with pytest.raises(InvalidInput, match="lies outside the picture, which is 100×100") as caught:
        region_box("100,0,5,5", 100, 100)
    assert caught.value.code == "invalid_manifest"
    assert [region_fragment(r) for r in ("1,2,3,4", "pct:1,2,3,4", "square")] == [
        "xywh=1,2,3,4", "xywh=percent:1,2,3,4", "region=square"]


def test_a_service_is_asked_for_a_region_at_the_models_size():
    info = v3_info(3536, 4999)
    assert region_request(info, 224, "1768,2423,1768,2080") == ImageRequest(
        f"{GOTTINGEN}/1768,2423,1768,2080/224,/0/default.jpg", size=(1768, 2080))  # the region's shorter side is its width
    assert region_request(info, 224, "0,0,3536,400").url == f"{GOTTINGEN}/0,0,3536,400/,224/0/default.jpg"
    assert region_request(info, 224, "pct:50,50,50,50").url == f"{GOTTINGEN}/1768,2500,1768,2499/224,/0/default.jpg"  # in pixels
    assert region_request(info, 224, "square").url == f"{GOTTINGEN}/0,731,3536,3536/224,/0/default.jpg"
    assert region_request(info, 224, "3000,4800,1000,1000").url == f"{GOTTINGEN}/3000,4800,536,199/max/0/default.jpg"  # small: never upscaled
    assert region_request(info, 224, "0,0,3536,4999") == ImageRequest(image_url(info, 224), size=(3536, 4999))  # the whole picture
    v2 = v2_info(6000, 4000, maxWidth=100)
    assert region_request(v2, 224, "0,0,2000,1000").url == f"{MUSEUM}/image/SK-A-1718/0,0,2000,1000/,50/0/default.jpg"  # within maxWidth
    with pytest.raises(InvalidInput, match="lies outside the picture") as caught:
        region_request(info, 224, "4000,0,10,10")
    assert caught.value.code == "invalid_manifest"


def test_a_level0_service_gives_a_listed_size_with_the_part_to_cut():
    sizes = [{"width": 354, "height": 500}, {"width": 884, "height": 1250}, {"width": 1768, "height": 2500}]
    asked = region_request(v3_info(3536, 4999, level=0, sizes=sizes), 224, "1768,2500,1768,2499")
    assert asked.url == f"{GOTTINGEN}/full/884,1250/0/default.jpg"  # the region is 442 wide there: enough
    assert asked.crop == pytest.approx((0.5, 2500 / 4999, 0.5, 2499 / 4999))
    bare = region_request(v2_info(6000, 4000, level=0), 224, "pct:0,0,50,50")
    assert bare == ImageRequest(f"{MUSEUM}/image/SK-A-1718/full/full/0/default.jpg", crop=(0.0, 0.0, 0.5, 0.5),
                                size=(3000, 2000))  # the region's own size, in the picture's pixels


# ------------------------------------------------- the picture's own size, from its info.json (issue 27, 5)


def test_a_picture_asked_at_the_models_size_keeps_its_own_width_and_height():
    from indexer.pictures.decode import DecodedImage
    from indexer.pictures.iiif_image import image_request

    folio = v3_info(7216, 5412)
    asked = image_request(folio, 224)
    assert asked == ImageRequest(image_url(folio, 224), size=(7216, 5412)) and asked.url.endswith("/full/,224/0/default.jpg")
    listed = v3_info(7216, 5412, level=0, sizes=[{"width": 85, "height": 64}, {"width": 902, "height": 677}])
    assert image_request(listed, 224).size == (7216, 5412)
    from PIL import Image

    derivative = DecodedImage(Image.new("RGB", (85, 64)), "0" * 64, 85, 64, "JPEG")
    stored = asked.sized(derivative)
    assert (stored.width, stored.height, stored.image.size) == (7216, 5412, (85, 64))  # the pixels stay the derivative's
    assert ImageRequest("x").sized(derivative) is derivative


def test_a_collection_stores_a_iiif_pictures_own_size_not_the_derivatives(iiif_engine):
    """Through the loopback IIIF server of test_iiif_collections (masters of 4000×3000, one server level 0)."""
    from indexer.collections.local import Collections
    from indexer.pictures.sources import PictureRef
    from indexer.schema import parse
    from indexer.schema.collections import AddSources, CreateCollection

    engine, base = iiif_engine
    collections = Collections(engine)
    collections.create(parse(CreateCollection, {"name": "folios"}))
    report = collections.add("folios", parse(AddSources, {"sources": [f"{base}/manifest.json"]}))
    assert report.added == 3
    sizes = {p.external_id: (p.width, p.height) for p in collections.view("folios").pictures}
    assert sizes == {f"{base}/canvas/{n}": (4000, 3000) for n in ("red", "blue", "green")}, sizes
    for name in ("red", "green"):  # a region asked of the service, and one cut from a level-0 server's listed size
        region = collections.read(PictureRef(f"{base}/iiif/{name}#xywh=1000,0,2000,1500", "iiif", region="1000,0,2000,1500"))
        assert (region.width, region.height) == (2000, 1500) and max(region.image.size) < 2000
    fetched = engine.fetch_picture(f"{base}/iiif/blue/info.json")
    assert (fetched.width, fetched.height) == (4000, 3000) and max(fetched.image.size) < 1000


@pytest.fixture
def iiif_engine(clean_environ, toy_loader, monkeypatch):
    from test_iiif_collections import IIIF, serving, toy_engine

    with serving(IIIF) as base:
        monkeypatch.setenv("CLIP_GAZE_FETCH_ALLOW", base.removeprefix("http://"))
        yield toy_engine(toy_loader), base
