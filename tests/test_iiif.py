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
    assert item.label is None and item.metadata == {"manifest": "John Dee performing an experiment before Queen Elizabeth I."}


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
        f"canvas 2 of 4 ({COOKBOOK}/0005-image-service/canvas/p2, “Deuxième vue”): no image (what it paints is not an Image)",
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
