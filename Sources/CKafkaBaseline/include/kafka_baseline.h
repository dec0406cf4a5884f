#ifndef SCOREBOARD_KAFKA_BASELINE_H
#define SCOREBOARD_KAFKA_BASELINE_H

/// Bare librdkafka loops, the same work the Swift wrapper does, measured in the same run as its baseline.
typedef struct {
    double seconds;
    long long messages;
    int failed;          /* non-zero when the loop did not finish */
    char error[256];
} scoreboard_baseline_result;

/// Produces `count` keyed messages of `value_size` bytes (idempotent, acks=all, linger 5 ms) and waits for every
/// delivery report. Times from the first produce call to the last report.
scoreboard_baseline_result scoreboard_baseline_produce(const char *brokers, const char *topic, long long count,
                                                       int value_size, int key_space);

/// Joins `group`, subscribes to `topic` and reads `count` messages. Times from the first message to the last,
/// so the group join is not counted.
scoreboard_baseline_result scoreboard_baseline_consume(const char *brokers, const char *topic, const char *group,
                                                       long long count, int timeout_ms);

#endif
