"""Entry module for `mitmdump -s helicone_addon/addon.py` (`helicone-addon run` loads the same list).

The addons, in the order a call meets them, are listed and explained in `helicone_addon/proxy/`.
"""

from helicone_addon.proxy import make_addons

addons = make_addons()
