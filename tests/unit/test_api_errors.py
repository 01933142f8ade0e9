"""An API server's error answer becomes the error class of its status and reason."""

from wukong.runtime import AlreadyExists, ApiError, Conflict, NotFound
from wukong.runtime._errors import api_error


def test_error_classes_follow_status_and_reason() -> None:
    def error(status: int, reason: str) -> ApiError:
        return api_error(status=status, body={"reason": reason}, verb="GET", path="/x")

    assert type(error(404, "NotFound")) is NotFound
    assert type(error(409, "Conflict")) is Conflict
    assert type(error(409, "AlreadyExists")) is AlreadyExists
    assert type(error(500, "InternalError")) is ApiError
