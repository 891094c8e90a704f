"""An independent Kafka client (confluent-kafka) for tests/security_kafka.rs.

copy:       reads COUNT records from one topic and writes them to another, spread over one
            producer per compression codec, as producers other than tracepipe's would write them.
scram-user: creates a SCRAM user through the admin API (AlterUserScramCredentials).

Every other librdkafka property is given as --set key=value (TLS, SASL).
"""

import argparse
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
    args = parser.parse_args()
    {"copy": copy, "scram-user": scram_user}[args.command](args)


if __name__ == "__main__":
    main()
