#include "kafka_baseline.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct {
    long long delivered;
    long long failed;
} delivery_counts;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque) {
    delivery_counts *counts = (delivery_counts *)opaque;
    if (message->err) counts->failed++; else counts->delivered++;
    (void)rk;
}

static rd_kafka_conf_t *make_conf(const char *brokers, char *error, size_t error_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, error, error_size) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

scoreboard_baseline_result scoreboard_baseline_produce(const char *brokers, const char *topic, long long count,
                                                       int value_size, int key_space) {
    scoreboard_baseline_result result = {0};
    rd_kafka_conf_t *conf = make_conf(brokers, result.error, sizeof result.error);
    if (!conf) { result.failed = 1; return result; }
    delivery_counts counts = {0};
    rd_kafka_conf_set(conf, "enable.idempotence", "true", NULL, 0);
    rd_kafka_conf_set(conf, "acks", "all", NULL, 0);
    rd_kafka_conf_set(conf, "linger.ms", "5", NULL, 0);
    rd_kafka_conf_set(conf, "batch.num.messages", "10000", NULL, 0);
    rd_kafka_conf_set(conf, "batch.size", "1000000", NULL, 0);
    rd_kafka_conf_set(conf, "queue.buffering.max.messages", "500000", NULL, 0);
    rd_kafka_conf_set(conf, "message.timeout.ms", "30000", NULL, 0);
    rd_kafka_conf_set_opaque(conf, &counts);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, result.error, sizeof result.error);
    if (!rk) { result.failed = 1; return result; }

    char *value = malloc((size_t)value_size);
    memset(value, 'v', (size_t)value_size);
    char key[32];
    double start = now_seconds();
    for (long long i = 0; i < count; i++) {
        int key_length = snprintf(key, sizeof key, "user-%lld", i % key_space);
        for (;;) {
            rd_kafka_resp_err_t err = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_VALUE(value, (size_t)value_size), RD_KAFKA_V_KEY(key, (size_t)key_length), RD_KAFKA_V_END);
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                snprintf(result.error, sizeof result.error, "produce: %s", rd_kafka_err2str(err));
                result.failed = 1;
                goto done;
            }
            rd_kafka_poll(rk, 10);
        }
        rd_kafka_poll(rk, 0);
    }
    while (counts.delivered + counts.failed < count) rd_kafka_poll(rk, 100);
    result.seconds = now_seconds() - start;
    result.messages = counts.delivered;
    if (counts.failed) {
        snprintf(result.error, sizeof result.error, "%lld deliveries failed", counts.failed);
        result.failed = 1;
    }
done:
    free(value);
    rd_kafka_flush(rk, 10000);
    rd_kafka_destroy(rk);
    return result;
}

scoreboard_baseline_result scoreboard_baseline_consume(const char *brokers, const char *topic, const char *group,
                                                       long long count, int timeout_ms) {
    scoreboard_baseline_result result = {0};
    rd_kafka_conf_t *conf = make_conf(brokers, result.error, sizeof result.error);
    if (!conf) { result.failed = 1; return result; }
    rd_kafka_conf_set(conf, "group.id", group, NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", NULL, 0);
    rd_kafka_conf_set(conf, "session.timeout.ms", "6000", NULL, 0);
    rd_kafka_conf_set(conf, "heartbeat.interval.ms", "500", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, result.error, sizeof result.error);
    if (!rk) { result.failed = 1; return result; }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);

    /* The same polling as the Swift consumer: wait for a first message, then take what else is ready in one call. */
    enum { batch_capacity = 5000 };
    rd_kafka_message_t *batch[batch_capacity];
    rd_kafka_queue_t *queue = rd_kafka_queue_get_consumer(rk);
    double deadline = now_seconds() + timeout_ms / 1000.0;
    double start = 0;
    long long received = 0;
    while (received < count && now_seconds() < deadline) {
        rd_kafka_message_t *first = rd_kafka_consumer_poll(rk, 100);
        if (!first) continue;
        batch[0] = first;
        ssize_t more = rd_kafka_consume_batch_queue(queue, 0, batch + 1, batch_capacity - 1);
        ssize_t n = 1 + (more > 0 ? more : 0);
        for (ssize_t i = 0; i < n; i++) {
            if (!batch[i]->err) {
                if (received == 0) start = now_seconds();
                received++;
            }
            rd_kafka_message_destroy(batch[i]);
        }
    }
    rd_kafka_queue_destroy(queue);
    result.seconds = now_seconds() - start;
    result.messages = received;
    if (received < count) {
        snprintf(result.error, sizeof result.error, "read %lld of %lld messages before the deadline", received, count);
        result.failed = 1;
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return result;
}
