"""Images built from the project (the gateway's, the Patroni members'), referenced by what
was built, not by their tag."""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_docker as docker


def built_image(
    resource_name: str,
    image_name: str,
    context: str,
    parent: pulumi.Resource,
    build_args: Mapping[str, str] | None = None,
) -> pulumi.Output[str]:
    """Build ``context`` (its own Dockerfile, given ``build_args``) as ``image_name`` on the
    Docker host, without pushing, and return the built image's id (``sha256:<hash>``) for
    ``Container.image``.

    Why ``repo_digest``: ``image_name`` is an input echoed back, the same tag before and after
    a rebuild, so a container given it never changes and is never replaced. pulumi-docker's
    ``Image`` (5.2.0, ``docker:index/image:Image``) documents ``repo_digest`` as the output to
    hand to containers: "unique per build/push"; for a local-only image (``skip_push``) it
    is "the image ID of the built local image, of the format <algorithm>:<hash>" (added in
    pulumi-docker#739, which inspects the freshly built image for it). The provider rebuilds
    only when the context's hash (``.dockerignore`` applied) or the build arguments change;
    a rebuild yields a new image id, hence a new ``Container.image``, a change that forces
    the container's replacement, so the containers roll. An unchanged context keeps the id
    and the containers. The id is also what ``Container.image`` documents ("The ID of the
    image") and what the provider reads back, so a tag there diffs against the stored id.

    A ``RemoteImage`` keyed on the tag with ``pull_triggers=[repo_digest]`` would yield the
    same id through ``image_id`` at the cost of a second resource, so it is not used.
    """
    built = docker.Image(
        resource_name,
        image_name=image_name,
        # No arguments: the same inputs the gateway's image always had (no diff, no rebuild).
        build=docker.DockerBuildArgs(
            context=context, args=dict(build_args) if build_args else None
        ),
        skip_push=True,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return built.repo_digest
