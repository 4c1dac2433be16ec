"""Put a tokenized contract file back into an outbound request to a signing service.

The backend posts JSON with the contract's token in ``field``. The function fetches the file
through the vault (under the role on its step, which must allow detokenizing the file class)
and sends it either as a multipart upload with the other top-level fields as text parts
(``encoding: multipart``), or inline in the JSON as base64 (``encoding: base64``).
"""


def transform(message, *, vault, field: str = "contract", encoding: str = "multipart"):
    body = message["body"]
    token = body.pop(field)
    file = vault.file(token)
    if encoding == "base64":
        body[field] = {
            "filename": file["filename"],
            "content_type": file["content_type"],
            "content_base64": file["data"],
        }
        return message
    if encoding != "multipart":
        raise ValueError("encoding must be multipart or base64")
    parts = [
        {"name": name, "value": str(value)}
        for name, value in body.items()
        if not isinstance(value, (dict, list))
    ]
    parts.append({"name": field, **file})
    message.update(body_type="multipart", body=parts)
    return message
