"""dsw: a Kafka-driven worker that runs C# scripts in fresh, locked-down Docker containers."""

__version__ = "0.1.0"
