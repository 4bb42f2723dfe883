"""The engine's resource: who is sending (service, host, process, pod), one builder
for both setups (configure() and the configurator opentelemetry-instrument loads).

Precedence, highest first:
1. what the engine's code passes to configure() (service_name, service_version,
   resource_attributes), as OpenTelemetry's Resource.create does;
2. OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, the operator's;
3. what the shim detects: k8s.* from the Kubernetes downward-API variables the
   Helm chart sets, host.name, process.pid, telemetry.distro.*, and service.name
   "trading-engine" when nobody named the service.

The detector is also an `opentelemetry_resource_detector` entry point
(`tickscope`), for an engine that runs another distro:
OTEL_EXPERIMENTAL_RESOURCE_DETECTORS=tickscope.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import OTELResourceDetector, Resource, ResourceDetector

from tickscope.shim import settings
from tickscope.shim.version import __version__

__all__ = ["TickscopeResourceDetector", "default_attributes", "engine_resource"]

DISTRO_NAME = "tickscope-shim"


def detected_attributes() -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "telemetry.distro.name": DISTRO_NAME,
        "telemetry.distro.version": __version__,
    }
    for key, names in settings.K8S_ENV.items():
        value = settings.env(*names)
        if value:
            attributes[key] = value
    return attributes


class TickscopeResourceDetector(ResourceDetector):
    """k8s.* from the downward API, host, process and telemetry.distro.*."""

    def detect(self) -> Resource:
        return Resource(detected_attributes())


def default_attributes() -> dict[str, Any]:
    """What the shim adds to a resource, minus what the operator's OTEL_* variables
    set (those win over anything detected)."""
    from_env = OTELResourceDetector().detect().attributes
    attributes = {"service.name": settings.DEFAULT_SERVICE_NAME, **detected_attributes()}
    return {key: value for key, value in attributes.items() if key not in from_env}


def engine_resource(
    service_name: str | None = None,
    service_version: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Resource:
    explicit: dict[str, Any] = {}
    if service_name:
        explicit["service.name"] = service_name
    if service_version:
        explicit["service.version"] = service_version
    explicit.update(extra or {})
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES under what it is given.
    return Resource.create({**default_attributes(), **explicit})
