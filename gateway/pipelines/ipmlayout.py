"""The data elements of Mastercard IPM messages that the IPM reader can parse."""

from __future__ import annotations

from typing import Final

# Each data element's layout: the number of length digits (0 for a fixed element), the fixed or
# maximum length, and whether the content is binary rather than text.
ELEMENTS: Final[dict[int, tuple[int, int, bool]]] = {
    2: (2, 19, False),   # primary account number
    3: (0, 6, False),    # processing code
    4: (0, 12, False),   # amount, transaction
    5: (0, 12, False),   # amount, reconciliation
    6: (0, 12, False),   # amount, cardholder billing
    9: (0, 8, False),    # conversion rate, reconciliation
    10: (0, 8, False),   # conversion rate, cardholder billing
    12: (0, 12, False),  # date and time, local transaction
    14: (0, 4, False),   # expiration date
    22: (0, 12, False),  # point of service data code
    23: (0, 3, False),   # card sequence number
    24: (0, 3, False),   # function code
    25: (0, 4, False),   # message reason code
    26: (0, 4, False),   # card acceptor business code
    30: (0, 24, False),  # amounts, original
    31: (2, 23, False),  # acquirer reference data
    32: (2, 11, False),  # acquiring institution id code
    33: (2, 11, False),  # forwarding institution id code
    37: (0, 12, False),  # retrieval reference number
    38: (0, 6, False),   # approval code
    40: (0, 3, False),   # service code
    41: (0, 8, False),   # card acceptor terminal id
    42: (0, 15, False),  # card acceptor id code
    43: (2, 99, False),  # card acceptor name and location
    48: (3, 999, False), # additional data
    49: (0, 3, False),   # currency code, transaction
    50: (0, 3, False),   # currency code, reconciliation
    51: (0, 3, False),   # currency code, cardholder billing
    54: (3, 120, False), # amounts, additional
    55: (3, 255, True),  # integrated circuit card system related data
    62: (3, 999, False), # additional data 2
    63: (3, 999, False), # transaction life cycle id
    71: (0, 8, False),   # message number
    72: (3, 999, False), # data record
    73: (0, 6, False),   # date, action
    93: (2, 11, False),  # transaction destination institution id code
    94: (2, 11, False),  # transaction originator institution id code
    95: (2, 10, False),  # card issuer reference data
    100: (2, 11, False), # receiving institution id code
    111: (3, 999, False),  # amount, currency conversion assessment
    123: (3, 999, False),  # additional data 3
    124: (3, 999, False),  # additional data 4
    125: (3, 999, False),  # additional data 5
    127: (3, 999, False),  # network data
}  # fmt: skip
