"""Conversion between catalog records and omero.model objects sent over Ice."""

from __future__ import annotations

from typing import Any

import omero
import omero.model
import omero.ObjectFactoryRegistrar  # noqa: F401 - defines the omero.model.*I classes
from omero.rtypes import rint, rlong, rstring, unwrap

from tests.standin.catalog import Catalog, Record, Ref

CONTAINERS = ("Image", "Dataset", "Project", "Plate", "Screen", "Well", "Roi")
ANNOTATION_LINKS = tuple(f"{kind}AnnotationLink" for kind in CONTAINERS)
OTHER_LINKS = ("DatasetImageLink", "ProjectDatasetLink", "ScreenPlateLink")
LINKS = ANNOTATION_LINKS + OTHER_LINKS
SAVABLE = CONTAINERS + LINKS + ("OriginalFile", "FileAnnotation")

# Field name -> kind of object it refers to, per kind.
REFERENCES: dict[str, dict[str, str]] = {
    "FileAnnotation": {"file": "OriginalFile"},
    "Well": {"plate": "Plate"},
    "Roi": {"image": "Image"},
    **{f"{k}AnnotationLink": {"parent": k, "child": "FileAnnotation"} for k in CONTAINERS},
    "DatasetImageLink": {"parent": "Dataset", "child": "Image"},
    "ProjectDatasetLink": {"parent": "Project", "child": "Dataset"},
    "ScreenPlateLink": {"parent": "Screen", "child": "Plate"},
}
# Plain fields, per kind, with the rtype used to send them.
SCALARS: dict[str, dict[str, Any]] = {
    **{k: {"name": rstring, "description": rstring} for k in CONTAINERS},
    "Well": {"row": rint, "column": rint},
    "OriginalFile": {"name": rstring, "path": rstring, "mimetype": rstring, "size": rlong,
                     "hash": rstring},
    "FileAnnotation": {"ns": rstring, "description": rstring},
}


def kind_of(name_or_obj: Any) -> str:
    """'Image' from an ImageI, 'ImageI', 'omero.model.ImageI' or 'Image'."""
    name = name_or_obj if isinstance(name_or_obj, str) else type(name_or_obj).__name__
    name = name.rsplit(".", 1)[-1]
    if name.endswith("I") and hasattr(omero.model, name):
        name = name[:-1]
    return name


def model_class(kind: str) -> type:
    return getattr(omero.model, f"{kind}I")


def fields_from_model(kind: str, obj: Any) -> dict[str, Any]:
    """The scalar fields and references set on an incoming model object."""
    fields: dict[str, Any] = {}
    for name in SCALARS.get(kind, {}):
        value = getattr(obj, f"_{name}", None)
        if value is not None:
            fields[name] = unwrap(value)
    for name, ref_kind in REFERENCES.get(kind, {}).items():
        target = getattr(obj, f"_{name}", None)
        if target is not None and target.id is not None:
            fields[name] = Ref(kind_of(target) if kind_of(target) != "Annotation" else ref_kind,
                               unwrap(target.id))
    return fields


def to_model(catalog: Catalog, record: Record, depth: int = 1) -> Any:
    """A loaded omero.model object for ``record``, with details; references loaded to ``depth``."""
    obj = model_class(record.kind)(record.id, True)
    for name, wrap in SCALARS.get(record.kind, {}).items():
        if record.fields.get(name) is not None:
            setattr(obj, name, wrap(record.fields[name]))
    for name in REFERENCES.get(record.kind, {}):
        ref = record.fields.get(name)
        if ref is None:
            continue
        target = catalog.get(ref.kind, ref.id)
        if depth > 0 and target is not None:
            setattr(obj, name, to_model(catalog, target, depth - 1))
        else:
            setattr(obj, name, model_class(ref.kind)(ref.id, False))
    set_details(catalog, obj, record.owner_id, record.group_id)
    return obj


def set_details(catalog: Catalog, obj: Any, owner_id: int, group_id: int) -> None:
    """Fill ``obj.details`` with owner, group and the group's permissions."""
    owner = catalog.users[owner_id]
    group = catalog.groups[group_id]
    details = obj.getDetails()
    exp = omero.model.ExperimenterI(owner.id, True)
    exp.omeName = rstring(owner.name)
    exp.firstName = rstring(owner.first_name or owner.name)
    exp.lastName = rstring(owner.last_name or owner.name)
    details.owner = exp
    grp = omero.model.ExperimenterGroupI(group.id, True)
    grp.name = rstring(group.name)
    grp.details.permissions = omero.model.PermissionsI(group.permissions)
    details.group = grp
    details.permissions = omero.model.PermissionsI(group.permissions)
