"""The add-on's interface: the sidebar panels and the File > Import entry."""
