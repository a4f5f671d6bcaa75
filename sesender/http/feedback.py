"""``POST /v1/events/results``: the SNS webhook for SES events (no API key: SNS signs instead).

The body is read raw (SNS posts ``text/plain``). 400 for a malformed message or a missing or
contradicting ``x-amz-sns-message-type`` header, 403 for a failed verification, 503 when the
signing certificate or the SubscribeURL could not be fetched or the database refused the write
(SNS retries 5xx, never 4xx), and 200 only once the event is committed.
"""

from __future__ import annotations

import logging

from quart import Blueprint, Response, request

from sesender.errors import (
    ApiError,
    SnsCertificateUnavailable,
    SnsMalformed,
    SnsSignatureInvalid,
    StoreError,
    SubscriptionConfirmFailed,
)
from sesender.feedback.sns import MAX_ENVELOPE_BYTES
from sesender.http.context import app_context
from sesender.http.responses import json_response

logger = logging.getLogger(__name__)

feedback_blueprint = Blueprint("events_results", __name__)

MESSAGE_TYPE_HEADER = "x-amz-sns-message-type"


@feedback_blueprint.post("/v1/events/results")
async def sns_results() -> Response:
    context = app_context()
    header_type = request.headers.get(MESSAGE_TYPE_HEADER)
    if header_type is None:
        raise ApiError(400, f"Missing {MESSAGE_TYPE_HEADER} header")
    length = request.content_length
    if length is not None and length > MAX_ENVELOPE_BYTES:
        raise ApiError(413, "Request body too large")
    body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    if len(body) > MAX_ENVELOPE_BYTES:  # a chunked body gives no Content-Length to check first
        raise ApiError(413, "Request body too large")
    try:
        result = await context.intake.handle_sns(body, header_type=header_type)
    except SnsMalformed as exc:
        context.sns_rejections["malformed"] = context.sns_rejections.get("malformed", 0) + 1
        raise ApiError(400, f"Malformed SNS message: {exc}") from exc
    except SnsCertificateUnavailable as exc:
        logger.warning("SNS certificate unavailable: %s", exc)
        raise ApiError(503, "SNS signing certificate unavailable; retry later") from exc
    except SnsSignatureInvalid as exc:
        context.sns_rejections["invalid"] = context.sns_rejections.get("invalid", 0) + 1
        logger.warning("refused an SNS message: %s", exc, extra={"event": "sns_refused"})
        raise ApiError(403, "SNS message verification failed") from exc
    except SubscriptionConfirmFailed as exc:
        logger.error("%s", exc, extra={"event": "sns_confirm_failed"})
        raise ApiError(503, "Could not confirm the subscription; retry later") from exc
    except StoreError as exc:
        raise ApiError(503, f"Storage unavailable: {exc}") from exc
    body_out: dict[str, object] = {"status": "ok", "result": result.outcome.value}
    if result.event_type is not None:
        body_out["event_type"] = result.event_type
    return json_response(body_out)
