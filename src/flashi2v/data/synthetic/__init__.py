"""An offline, reproducible training set: a virtual camera moving over real photos, plus real sample videos.

The built-in small FlashI2V model learns to follow camera-motion prompts. Its training clips are rendered
from the real photos that ship inside installed PyPI packages (scikit-image, matplotlib, scikit-learn), so
the set needs no network and is identical on every machine for the same seed. Each clip is one camera
motion at one pace, described by a caption from a small fixed set of templates, because the text encoder
is a small sentence-transformer and the evaluation prompts come from the same templates.

Film convention (content moves opposite to the camera):

* "the camera pans left"  -> scene content moves toward the RIGHT edge;  "pans right" -> content moves left;
* "the camera tilts up"   -> content moves DOWN;                         "tilts down" -> content moves up;
* "the camera zooms in"   -> content grows from the centre;              "zooms out"  -> content shrinks;
* "the camera rolls clockwise" -> the camera turns clockwise about its lens axis, so the picture content
  turns COUNTERCLOCKWISE on screen; "rolls counterclockwise" is the mirror image;
* "a still shot" -> no motion at all (every frame equals frame 0).

Modules: ``camera_path`` (the windows), ``render`` (frames from windows), ``camera_clips`` (the dataset),
``real_clips`` (clips cut from real videos), ``write_set`` (the set on disk). The photos and the captions
live in ``flashi2v.photos`` and ``flashi2v.captions``, shared with the evaluation.

Typical use::

    from flashi2v.data.synthetic.write_set import write_synthetic_set
    index = write_synthetic_set("synth", num_clips=2000, seed=0)   # mp4 clips + index.jsonl + held_out.json
    records = load_clip_index(index)
"""

