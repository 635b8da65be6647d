"""The CloudEvents SDK's 1.x API, whichever major version is installed.

The two entries run in different environments: functions-framework pins cloudevents
1.x, func's func-python middleware needs 2.x, which keeps the 1.x API under
``cloudevents.v1``. Everything in a function imports the SDK from here, so one core
serves both.
"""

from __future__ import annotations

try:  # cloudevents 2.x (func-python)
    from cloudevents.v1.conversion import to_binary, to_dict, to_structured
    from cloudevents.v1.exceptions import GenericException
    from cloudevents.v1.http import CloudEvent, from_http
except ImportError:  # cloudevents 1.x (functions-framework)
    from cloudevents.conversion import to_binary, to_dict, to_structured
    from cloudevents.exceptions import GenericException
    from cloudevents.http import CloudEvent, from_http

__all__ = ["CloudEvent", "GenericException", "from_http", "to_binary", "to_dict",
           "to_structured"]
