"""Reshape a provider-neutral payment into Stripe's PaymentIntent request.

Input, as the backend posts it to /pay/stripe::

    {"amount": {"value": 1250, "currency": "EUR"}, "reference": "order-17",
     "card": {"number": "<token>", "cvc": "<token>", "exp_month": 12, "exp_year": 2030}}

Output: POST /v1/payment_intents with a form body, which Stripe's API takes. The card fields
are still tokens here; the route detokenizes them after this step, so this function never
handles a card number. The backend's Stripe key travels in X-Provider-Key and leaves as
Authorization, where Stripe expects it.
"""


def transform(message, *, capture: bool = True):
    payment = message["body"]
    card = payment["card"]
    form = [
        ["amount", payment["amount"]["value"]],
        ["currency", payment["amount"]["currency"].lower()],
        ["confirm", "true"],
        ["capture_method", "automatic" if capture else "manual"],
        ["payment_method_data[type]", "card"],
        ["payment_method_data[card][number]", card["number"]],
        ["payment_method_data[card][exp_month]", card["exp_month"]],
        ["payment_method_data[card][exp_year]", card["exp_year"]],
        ["payment_method_data[card][cvc]", card["cvc"]],
        ["metadata[reference]", payment["reference"]],
    ]
    headers = dict(message["headers"])
    key = headers.pop("x-provider-key", None)
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    # Stripe runs a request with the same key once, so a retried payment is not charged twice.
    headers["idempotency-key"] = payment["reference"]
    message.update(path="/v1/payment_intents", headers=headers, body_type="form", body=form)
    return message
