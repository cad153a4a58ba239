"""Build (or remove) the Docker images the container tests share, once for CI.

CI runs the suites of both Pythons at the same time against one engine. A test
session removes an image it built itself when it ends, which could take the
image from under the other suite. Built here first, the images already exist
for both suites, so neither removes them; `remove` (run at CI's exit) does.

    python .ci/images.py build | remove
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "docker"))

from docker_engine import SLEEPER_REPOSITORY, build_sleeper

from chaospika.docker import _engine
from chaospika.sandbox import redis_container


def main(action: str) -> int:
    """Build or remove the test sleeper image and the sandbox Redis image."""
    client = _engine.connect(None)
    try:
        if action == "build":
            sleeper, _ = build_sleeper(client)
            redis = redis_container.redis_image()
            print(f"images.py: built {sleeper} and {redis}")
            return 0
        if action == "remove":
            import docker

            for image in client.images():
                tags = image.get("RepoTags") or []
                repositories = {tag.rsplit(":", 1)[0] for tag in tags}
                if repositories & {
                    SLEEPER_REPOSITORY,
                    redis_container.IMAGE_REPOSITORY,
                }:
                    try:
                        client.remove_image(image["Id"], force=False)
                        print(f"images.py: removed {', '.join(tags)}")
                    except docker.errors.APIError as error:
                        print(f"images.py: kept {', '.join(tags)}: {error}")
            return 0
        print("usage: python .ci/images.py build|remove", file=sys.stderr)
        return 2
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
