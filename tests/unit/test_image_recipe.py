"""The image builder reads each deploy/images Dockerfile into what it carries out."""

from pathlib import Path

import pytest

from wukong.devcluster.errors import DevClusterError
from wukong.devcluster.imagebuild import read_recipe

IMAGES = Path(__file__).resolve().parents[2] / "deploy" / "images"


def test_the_operator_recipe_has_a_build_stage_and_a_non_root_final_stage() -> None:
    recipe = read_recipe(IMAGES / "operator.Dockerfile")
    build, final = recipe.stages
    assert {p.split("=")[0] for p in build} == {"python3", "python3-venv"}
    assert {p.split("=")[0] for p in final} == {"python3", "ca-certificates"}
    assert not recipe.system_site_packages
    assert (recipe.user, recipe.entrypoint, recipe.cmd) == (
        "65532:65532",
        ["/opt/wukong/bin/wukong"],
        ["run"],
    )


def test_the_agent_recipe_is_one_stage_whose_virtualenv_sees_debians_bcc() -> None:
    recipe = read_recipe(IMAGES / "agent.Dockerfile")
    (stage,) = recipe.stages
    assert "python3-bpfcc" in {p.split("=")[0] for p in stage}
    assert recipe.system_site_packages
    assert (recipe.user, recipe.cmd) == ("0:0", ["agent"])


def test_a_dockerfile_of_another_shape_is_refused_in_one_line(tmp_path: Path) -> None:
    dockerfile = tmp_path / "other.Dockerfile"
    dockerfile.write_text('FROM debian:bookworm-slim\nUSER 0:0\nENTRYPOINT ["/bin/sh"]\n')
    with pytest.raises(DevClusterError, match="not a Dockerfile this builder can follow"):
        read_recipe(dockerfile)
