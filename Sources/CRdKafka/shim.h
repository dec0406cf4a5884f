#ifndef SCOREBOARD_CRDKAFKA_SHIM_H
#define SCOREBOARD_CRDKAFKA_SHIM_H

#include <librdkafka/rdkafka.h>

// Debian bookworm's headers are librdkafka 2.0.2; we link and run against a current runtime (>= 2.3, see
// scripts/stack.sh). These are the few newer admin APIs we use, declared exactly as librdkafka 2.3+ declares them.
#if RD_KAFKA_VERSION < 0x020300ff
typedef struct rd_kafka_Uuid_s rd_kafka_Uuid_t;
typedef struct rd_kafka_TopicCollection_s rd_kafka_TopicCollection_t;
typedef struct rd_kafka_TopicPartitionInfo_s rd_kafka_TopicPartitionInfo_t;
typedef struct rd_kafka_TopicDescription_s rd_kafka_TopicDescription_t;
typedef rd_kafka_event_t rd_kafka_DescribeTopics_result_t;

const char *rd_kafka_Uuid_base64str(const rd_kafka_Uuid_t *uuid);
rd_kafka_TopicCollection_t *rd_kafka_TopicCollection_of_topic_names(const char **topics, size_t topics_cnt);
void rd_kafka_TopicCollection_destroy(rd_kafka_TopicCollection_t *topics);
void rd_kafka_DescribeTopics(rd_kafka_t *rk, const rd_kafka_TopicCollection_t *topics,
                             const rd_kafka_AdminOptions_t *options, rd_kafka_queue_t *rkqu);
const rd_kafka_DescribeTopics_result_t *rd_kafka_event_DescribeTopics_result(rd_kafka_event_t *rkev);
const rd_kafka_TopicDescription_t **rd_kafka_DescribeTopics_result_topics(const rd_kafka_DescribeTopics_result_t *result,
                                                                          size_t *cntp);
const rd_kafka_TopicPartitionInfo_t **rd_kafka_TopicDescription_partitions(const rd_kafka_TopicDescription_t *topicdesc,
                                                                           size_t *cntp);
const int rd_kafka_TopicPartitionInfo_partition(const rd_kafka_TopicPartitionInfo_t *partition);
const char *rd_kafka_TopicDescription_name(const rd_kafka_TopicDescription_t *topicdesc);
const rd_kafka_Uuid_t *rd_kafka_TopicDescription_topic_id(const rd_kafka_TopicDescription_t *topicdesc);
const rd_kafka_error_t *rd_kafka_TopicDescription_error(const rd_kafka_TopicDescription_t *topicdesc);
#endif

/// `rd_kafka_producev` is variadic, which Swift cannot call: this fixed-arity wrapper copies key and value.
static inline rd_kafka_resp_err_t scoreboard_rd_kafka_produce(rd_kafka_t *rk, const char *topic, int32_t partition,
                                                              const void *value, size_t value_len,
                                                              const void *key, size_t key_len,
                                                              int64_t timestamp_ms, void *opaque) {
    return rd_kafka_producev(rk,
                             RD_KAFKA_V_TOPIC(topic),
                             RD_KAFKA_V_PARTITION(partition),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_VALUE((void *)value, value_len),
                             RD_KAFKA_V_KEY(key, key_len),
                             RD_KAFKA_V_TIMESTAMP(timestamp_ms),
                             RD_KAFKA_V_OPAQUE(opaque),
                             RD_KAFKA_V_END);
}

#endif
