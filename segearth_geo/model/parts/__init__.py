"""Network parts shared by the backends of the family, one file per part (as segment-anything's ``modeling/``).

* ``swin`` – the Swin-B image encoder (SegEarth-R1's vision tower, SegEarth-R2's mask-branch backbone);
* ``msdeform_attn`` – multi-scale deformable attention (pure PyTorch);
* ``pixel_decoder`` – the MSDeformAttn pixel decoder (``mask_features`` + three multi-scale maps);
* ``mask_decoder`` – the Mask2Former masked-attention decoder;
* ``position_encoding`` – the sine position encoding of the pixel and mask decoders;
* ``phi`` – the Phi language model wrapper (SegEarth-R1: Phi-1.5, SegEarth-R2: Phi-2);
* ``crop_back`` – mask logits on the padded square canvas back to a chip's own pixels.

Each part is built from :mod:`~segearth_geo.model.branch_configuration`'s configs; its attribute names are the
checkpoints' key names. A backend's ``modeling.py`` only wires parts.
"""
