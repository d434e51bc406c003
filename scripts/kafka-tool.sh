#!/usr/bin/env bash
# Apache Kafka's command-line tools from the same jars as the local broker, e.g.
#   kafka-tool.sh console-producer --bootstrap-server localhost:9092 --topic pending-x
#   kafka-tool.sh console-consumer | topics | consumer-groups ...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
declare -A classes=(
  [console-producer]=org.apache.kafka.tools.ConsoleProducer
  [console-consumer]=org.apache.kafka.tools.consumer.ConsoleConsumer
  [topics]=org.apache.kafka.tools.TopicCommand
  [consumer-groups]=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
)
tool=${1:-}
if [ -z "$tool" ] || [ -z "${classes[$tool]:-}" ]; then
  echo "usage: kafka-tool.sh {${!classes[*]}} ARGS..." | tr ' ' '|' >&2
  exit 2
fi
shift
libs=$("$here/provision-kafka.sh" libs)
exec java -Xmx256m "-Dlog4j2.configurationFile=$here/kafka/log4j2-tools.properties" \
  -cp "$libs/*" "${classes[$tool]}" "$@"
