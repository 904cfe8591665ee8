# Known miss: the resource travels through an object attribute set elsewhere.
import anthropic


class Box:
    pass


box = Box()
setattr(box, "thing", anthropic.Anthropic().messages)
box.thing.batches_ = None
getattr(box.thing, "batch" + "es".upper().lower())
