"""The add-on's menu entries."""
from ..operators.import_export import GVF4D_OT_import


def draw_import_entry(self, context):
    """File > Import > GVF4D Result (.gvf4d)."""
    self.layout.operator(GVF4D_OT_import.bl_idname, text="GVF4D Result (.gvf4d)")
