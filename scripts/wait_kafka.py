"""Wait until a Kafka broker answers a metadata request: wait_kafka.py HOST:PORT SECONDS."""

import asyncio
import logging
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient


async def answers(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        await admin.close()


def main() -> int:
    logging.disable(logging.CRITICAL)  # aiokafka logs every refused connection
    bootstrap, seconds = sys.argv[1], float(sys.argv[2])
    deadline = time.monotonic() + seconds
    while True:
        if asyncio.run(answers(bootstrap)):
            return 0
        if time.monotonic() >= deadline:
            return 1
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
