"""The engine-process collector: engine_process_* by PID, name or pid file."""

from tickscope.collectors.engine.collector import EngineProcessCollector, limits_from_env
from tickscope.collectors.engine.config import EngineConfig, EngineProcessConfig

__all__ = ["EngineConfig", "EngineProcessCollector", "EngineProcessConfig", "limits_from_env"]
