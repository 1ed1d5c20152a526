"""wsgate for Python services: publish to wsgate's channels (durable ones
through wsgate's own script, so clients can resume) and learn who wsgate let
through. ``wsgate.fastapi`` holds the FastAPI dependency.
"""

from . import frames
from .identity import ASSERTION_HEADER, AssertionVerifier, Identity, InvalidAssertion
from .publisher import PUBLISH_SCRIPT, AsyncPublisher, History, PublishError, Publisher

__all__ = [
    "ASSERTION_HEADER",
    "AssertionVerifier",
    "AsyncPublisher",
    "History",
    "Identity",
    "InvalidAssertion",
    "PUBLISH_SCRIPT",
    "PublishError",
    "Publisher",
    "frames",
]
__version__ = "0.1.0"
