#!/usr/bin/env python3
"""A product service in Python: publish billing events to the writer, then ask the sidecar.

    examples/python/generate.sh                 # stubs into examples/python/gen
    python3 examples/python/proofgate_example.py --writer 127.0.0.1:50051 \
        --sidecar 127.0.0.1:50061 --customer cus_42

It publishes a subscription to the "premium" plan and its paid invoice (IngestService.Publish),
then checks "api-access" with the revision Publish returned as min_revision (read-your-writes),
and prints the answer as one JSON line. The sidecar address may be unix:/path/to/sidecar.sock.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writer", default="127.0.0.1:50051", help="the writer's gRPC address")
    parser.add_argument("--sidecar", default=os.environ.get("PROOFGATE_SIDECAR_ADDRESS", "127.0.0.1:50061"), help="the sidecar's gRPC address")
    parser.add_argument("--customer", default="cus_python_example")
    parser.add_argument("--feature", default="api-access")
    parser.add_argument("--gen", default=os.path.join(HERE, "gen"), help="where generate.sh put the stubs")
    args = parser.parse_args()

    sys.path.insert(0, args.gen)
    import grpc  # noqa: E402  (after the path is set, like the stubs)
    from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402
    from proofgate.v1 import billing_pb2, check_pb2, check_pb2_grpc, ingest_pb2, ingest_pb2_grpc  # noqa: E402

    now = int(time.time())
    start, end = now - 3600, now + 30 * 86400

    def ts(seconds: int):
        return Timestamp(seconds=seconds)

    def event(event_id: str, **kind) -> billing_pb2.BillingEvent:
        return billing_pb2.BillingEvent(
            event_id=f"{args.customer}-{event_id}", occurred_at=ts(start), customer_id=args.customer,
            subscription_id=f"sub_{args.customer}", source="python-example", **kind)

    events = [
        event("subscribed", subscription=billing_pb2.SubscriptionChanged(
            status=billing_pb2.SUBSCRIPTION_STATUS_ACTIVE, plan_id="premium", quantity=1,
            current_period_start=ts(start), current_period_end=ts(end), version=1)),
        event("paid", payment=billing_pb2.PaymentOutcome(
            invoice_id=f"in_{args.customer}", result=billing_pb2.PAYMENT_RESULT_SUCCEEDED,
            period_start=ts(start), period_end=ts(end), plan_id="premium", quantity=1,
            session=billing_pb2.PAYMENT_SESSION_ON_SESSION, amount_minor=4900, currency="EUR")),
    ]

    with grpc.insecure_channel(args.writer) as writer:
        published = ingest_pb2_grpc.IngestServiceStub(writer).Publish(ingest_pb2.PublishRequest(events=events), timeout=10)
    rejected = [r for r in published.results if r.result == ingest_pb2.INGEST_RESULT_REJECTED]
    if rejected:
        print(f"rejected: {rejected}", file=sys.stderr)
        return 1

    with grpc.insecure_channel(args.sidecar) as sidecar:
        answer = check_pb2_grpc.CheckServiceStub(sidecar).Check(
            check_pb2.CheckRequest(customer_id=args.customer, feature=args.feature, min_revision=published.revision), timeout=5)

    print(json.dumps({
        "published_revision": published.revision,
        "results": [ingest_pb2.IngestResult.Name(r.result) for r in published.results],
        "allowed": answer.allowed,
        "status": check_pb2.AccessStatus.Name(answer.status),
        "reason": answer.reason,
        "revision": answer.revision,
        "stale": answer.stale,
        "valid_until": answer.valid_until.ToJsonString() if answer.HasField("valid_until") else None,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
