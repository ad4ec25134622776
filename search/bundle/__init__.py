"""A picked model's bundle: the model, with what runs it as measured and checks it again (onnxruntime, numpy).

write.py (project side) makes it; run.py and verify.py are copied into it as they are, beside
search/runtime/portable.py and machine.py, and import only those, numpy and onnxruntime.
"""
