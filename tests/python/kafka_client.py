"""An independent Kafka client (confluent-kafka) for tests/security_kafka.rs.

copy:       reads COUNT records from one topic and writes them to another, spread over one
            producer per compression codec, as producers other than tracepipe's would write them.
scram-user: creates a SCRAM user through the admin API (AlterUserScramCredentials).
corrupt-batch: writes one record batch whose zstd-compressed records are garbage (its CRC valid),
            with a hand-made Produce request, as a faulty producer would; no client library
            writes one.

Every other librdkafka property is given as --set key=value (TLS, SASL).
"""

import argparse
import socket
import struct
import sys

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion


def properties(args):
    config = {"bootstrap.servers": args.brokers}
    for setting in args.set or []:
        key, _, value = setting.partition("=")
        config[key] = value
    return config


def copy(args):
    consumer = Consumer({**properties(args), "group.id": "copy", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([args.source])
    codecs = args.codecs.split(",")
    # One record per batch: Tansu 0.6.0 answers a fetch from inside a batch with the batches after
    # it (see tests/support/mod.rs), and each record then carries its own codec.
    producers = [Producer({**properties(args), "compression.type": codec, "batch.num.messages": 1, "linger.ms": 0}) for codec in codecs]
    written = {codec: 0 for codec in codecs}
    failed = []

    def delivered(error, _message):
        if error is not None:
            failed.append(str(error))

    copied = 0
    idle = 0
    while copied < args.count and idle < 600:
        message = consumer.poll(0.1)
        if message is None:
            idle += 1
            continue
        if message.error():
            print(f"consumer error: {message.error()}", file=sys.stderr)
            continue
        idle = 0
        index = copied % len(codecs)
        producers[index].produce(args.destination, message.value(), key=message.key(), on_delivery=delivered)
        producers[index].poll(0)
        written[codecs[index]] += 1
        copied += 1
    for producer in producers:
        producer.flush(60)
    consumer.close()
    print(" ".join(f"{codec}={count}" for codec, count in written.items()))
    if failed or copied < args.count:
        print(f"copied {copied} of {args.count}; failed deliveries: {failed[:5]}", file=sys.stderr)
        sys.exit(1)


def scram_user(args):
    admin = AdminClient(properties(args))
    mechanism = {"SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256, "SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512}[args.mechanism]
    upsertion = UserScramCredentialUpsertion(args.user, ScramCredentialInfo(mechanism, 4096), args.password.encode())
    for user, future in admin.alter_user_scram_credentials([upsertion]).items():
        future.result(30)
        print(f"created {args.mechanism} user {user}")


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def corrupt_batch(args):
    # RecordBatch v2: attributes say zstd (codec 4), the records are not zstd.
    records = b"\x28\xb5\x2f\xfd" + b"not really zstd" * 8
    count = 5
    after_crc = struct.pack(">hiqqqhii", 4, count - 1, 0, 0, -1, -1, -1, count) + records
    body = struct.pack(">ibI", 0, 2, crc32c(after_crc)) + after_crc
    batch = struct.pack(">qi", 0, len(body)) + body

    def string(text):
        encoded = text.encode()
        return struct.pack(">h", len(encoded)) + encoded

    # Produce v3: header (api key 0, version 3, correlation id, client id), transactional id,
    # acks, timeout, one topic with one partition.
    request = struct.pack(">hhi", 0, 3, 1) + string("corrupt-batch") + struct.pack(">hhi", -1, -1, 10000)
    request += struct.pack(">i", 1) + string(args.topic) + struct.pack(">ii", 1, args.partition) + struct.pack(">i", len(batch)) + batch
    host, port = args.brokers.split(",")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", connection.recv(4))[0]
        answer = b""
        while len(answer) < size:
            answer += connection.recv(size - len(answer))
    # correlation id, topics (1), name, partitions (1), index, then the error code.
    offset = 4 + 4 + 2 + len(args.topic) + 4 + 4
    error = struct.unpack(">h", answer[offset:offset + 2])[0]
    if error != 0:
        print(f"the broker refused the batch: error {error}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote a corrupt zstd batch of {count} records to {args.topic} partition {args.partition}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--set", action="append")
    commands = parser.add_subparsers(dest="command", required=True)
    copy_command = commands.add_parser("copy")
    copy_command.add_argument("--from", dest="source", required=True)
    copy_command.add_argument("--to", dest="destination", required=True)
    copy_command.add_argument("--count", type=int, required=True)
    copy_command.add_argument("--codecs", default="gzip,snappy,lz4,zstd")
    user_command = commands.add_parser("scram-user")
    user_command.add_argument("--user", required=True)
    user_command.add_argument("--password", required=True)
    user_command.add_argument("--mechanism", default="SCRAM-SHA-256")
    corrupt_command = commands.add_parser("corrupt-batch")
    corrupt_command.add_argument("--topic", required=True)
    corrupt_command.add_argument("--partition", type=int, default=0)
    args = parser.parse_args()
    {"copy": copy, "scram-user": scram_user, "corrupt-batch": corrupt_batch}[args.command](args)


if __name__ == "__main__":
    main()
