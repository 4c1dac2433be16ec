"""Reshape a provider-neutral payment into Adyen Checkout's /payments request.

Input: the same JSON as for to_stripe. Output: POST /v71/payments with Adyen's JSON, card
fields still tokens (the route detokenizes them after this step). The backend's Adyen key
travels in X-Provider-Key and leaves as X-API-Key.
"""


def transform(message, *, merchant_account: str, api_version: int = 71):
    payment = message["body"]
    card = payment["card"]
    method = {
        "type": "scheme",
        "number": card["number"],
        "expiryMonth": f"{int(card['exp_month']):02d}",
        "expiryYear": str(card["exp_year"]),
        "cvc": card["cvc"],
    }
    if "holder" in card:
        method["holderName"] = card["holder"]
    headers = dict(message["headers"])
    key = headers.pop("x-provider-key", None)
    if key is not None:
        headers["x-api-key"] = key
    message.update(
        path=f"/v{api_version}/payments",
        headers=headers,
        body_type="json",
        body={
            "amount": payment["amount"],
            "reference": payment["reference"],
            "merchantAccount": merchant_account,
            "paymentMethod": method,
        },
    )
    return message
